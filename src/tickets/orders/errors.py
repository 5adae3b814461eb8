from tickets.problems import Conflict, NotFound, ProblemError, ValidationFailed


class OrderNotFound(NotFound):
    code, title = "order_not_found", "Order not found"


class SeatUnavailable(Conflict):
    code, title = "seat_unavailable", "Seat unavailable"


class SoldOut(Conflict):
    code, title = "sold_out", "Sold out"


class SalesNotOpen(Conflict):
    code, title = "sales_not_open", "Sales for this ticket type have not started"


class SalesEnded(Conflict):
    code, title = "sales_ended", "Sales for this ticket type have ended"


class TooManyTickets(ValidationFailed):
    code, title = "too_many_tickets", "Too many tickets in one order"


class TooFewTickets(ValidationFailed):
    code, title = "too_few_tickets", "Too few tickets of a type in one order"


class InvalidItem(ValidationFailed):
    code, title = "invalid_item", "An order item does not fit its ticket type"


class TableNotFound(InvalidItem):
    code, title = "table_not_found", "Table not found"


class OrderNotPending(Conflict):
    code, title = "order_not_pending", "The order is no longer pending"


class OrderExpired(Conflict):
    code, title = "order_expired", "The order has expired"


class PromoCodeInvalid(ValidationFailed):
    code, title = "promo_code_invalid", "The promo code is not valid for this order"


class PromoCodeExhausted(Conflict):
    code, title = "promo_code_exhausted", "The promo code has been used up"


class PromoCodeNotFound(NotFound):
    code, title = "promo_code_not_found", "Promo code not found"


class DuplicatePromoCode(Conflict):
    code, title = "duplicate_promo_code", "This gala already has that promo code"


class IdempotencyKeyReused(Conflict):
    code, title = "idempotency_key_reused", "The Idempotency-Key was used with another request"


class InvalidOrderToken(ProblemError):
    status, code, title = 401, "invalid_order_token", "Missing or wrong order token"


class PaymentsNotConfigured(Conflict):
    code, title = "payments_not_configured", "Card payments are not configured"
