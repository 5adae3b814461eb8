from tickets.problems import Conflict, NotFound


class TicketTypeNotFound(NotFound):
    code, title = "ticket_type_not_found", "Ticket type not found"


class TicketTypeInUse(Conflict):
    code, title = "ticket_type_in_use", "The ticket type has orders"


class QuotaBelowSold(Conflict):
    code, title = "quota_below_sold", "The quota is below what is already held and sold"
