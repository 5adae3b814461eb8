from tickets.problems import Conflict, ProblemError, ValidationFailed


class PaymentProviderError(ProblemError):
    """Stripe failed or timed out; nothing was kept (holds released). Safe to retry."""

    status, code, title = 502, "payment_provider_error", "The payment provider failed"


class InvalidSignature(ProblemError):
    status, code, title = 400, "invalid_signature", "The webhook signature is missing, wrong or stale"


class OrderNotRefundable(Conflict):
    code, title = "order_not_refundable", "Only paid orders can be refunded"


class RefundExceedsBalance(Conflict):
    code, title = "refund_exceeds_balance", "The refund is more than what is left to refund"


class InvalidRefund(ValidationFailed):
    code, title = "invalid_refund", "The refund request does not fit the order"
