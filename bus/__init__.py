"""lgsp-bus: a provincial data-exchange bus (gateway → RabbitMQ → adapter workers)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
