"""Plain helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import socket


def free_ports(n: int) -> list[int]:
    """``n`` loopback ports free at the time of the call (for two-process cluster tests)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports
