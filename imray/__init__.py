"""imray: a distributed instant-messaging backend on Ray."""

__version__ = "0.1.0"
