"""Mail: an outbox of messages written with the change that causes them, sent afterwards over SMTP."""
