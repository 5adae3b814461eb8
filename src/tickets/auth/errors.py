from tickets.problems import Forbidden, NotFound


class ApiKeyNotFound(NotFound):
    code, title = "api_key_not_found", "API key not found"


class RoleRequired(Forbidden):
    code, title = "insufficient_role", "This API key's role may not do this"


class GalaNotAllowed(Forbidden):
    code, title = "gala_not_allowed", "This API key is limited to other galas"
