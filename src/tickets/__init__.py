"""tickets: event ticketing and gala registration REST API."""

__version__ = "0.1.0"
