"""asyncio transport for the sans-I/O Upper Layer: connections, listeners, TLS."""
