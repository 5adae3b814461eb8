from tickets.problems import Conflict, NotFound


class TicketNotFound(NotFound):
    code, title = "ticket_not_found", "Ticket not found"


class NameChangeClosed(Conflict):
    code, title = "name_change_closed", "Attendee details can no longer be changed by the buyer"


class TicketVoid(Conflict):
    code, title = "ticket_void", "The ticket is void"


class TicketCheckedIn(Conflict):
    code, title = "ticket_checked_in", "The ticket has already been used at the door"


class TransferLimitReached(Conflict):
    code, title = "transfer_limit_reached", "The ticket cannot be reissued again"


class NoValidTickets(Conflict):
    code, title = "no_valid_tickets", "The order has no valid tickets"
