"""Free TCP ports on loopback, for a test's Serve HTTP proxy."""
from __future__ import annotations


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
