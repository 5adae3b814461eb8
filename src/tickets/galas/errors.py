from tickets.problems import Conflict, NotFound


class GalaNotFound(NotFound):
    code, title = "gala_not_found", "Gala not found"


class InvalidGalaTransition(Conflict):
    code, title = "invalid_status_transition", "The gala cannot move to that status"


class GalaNotReady(Conflict):
    code, title = "gala_not_ready", "The gala is not ready to go on sale"


class GalaHasOrders(Conflict):
    code, title = "gala_has_orders", "The gala already has orders"


class GalaCancelled(Conflict):
    code, title = "gala_cancelled", "The gala is cancelled"


class GalaNotOnSale(Conflict):
    code, title = "gala_not_on_sale", "The gala is not on sale"
