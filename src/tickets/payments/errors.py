from tickets.problems import ProblemError


class PaymentProviderError(ProblemError):
    """Stripe failed or timed out; nothing was kept (holds released). Safe to retry."""

    status, code, title = 502, "payment_provider_error", "The payment provider failed"
