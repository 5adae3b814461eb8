from tickets.problems import Conflict, NotFound


class TicketNotFound(NotFound):
    code, title = "ticket_not_found", "Ticket not found"


class NameChangeClosed(Conflict):
    code, title = "name_change_closed", "Attendee details can no longer be changed by the buyer"


class TicketVoid(Conflict):
    code, title = "ticket_void", "The ticket is void"
