from tickets.problems import NotFound, ValidationFailed


class WebhookEndpointNotFound(NotFound):
    code, title = "webhook_endpoint_not_found", "Webhook endpoint not found"


class WebhookDeliveryNotFound(NotFound):
    code, title = "webhook_delivery_not_found", "Webhook delivery not found"


class InvalidWebhookUrl(ValidationFailed):
    code, title = "invalid_webhook_url", "The webhook URL is not allowed"
