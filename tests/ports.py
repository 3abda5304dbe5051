"""Ports for processes a test or bench starts: the one definition every harness uses.

A port the kernel hands out for `bind(0)` comes from the ephemeral range, the same range it draws the
source ports of outgoing connections from. Such a port is free when picked, but between the pick and
the child process binding it any connect() on the machine may take it as its source port: a sidecar's
worker failed with EADDRINUSE that way in CI (its Redis and upstream connections, and the test
client's, all draw from that range). Ports below the range are never given to outgoing connections,
so a port picked there and checked bindable stays free unless someone binds it on purpose.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_FALLBACK_EPHEMERAL_START = 32768
_LOWEST = 10000
"""Below this sit the well-known services a developer machine may run (databases, registries)."""

_given: set[int] = set()
"""Ports this process has handed out: two picks before either is bound must not be the same port."""
_pick = random.Random()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _FALLBACK_EPHEMERAL_START


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now, below the ephemeral range, not handed out before by this
    process. Falls back to the kernel's choice when the range below is too narrow to pick from."""
    top = _ephemeral_start()
    if top - _LOWEST >= 1000:
        for _ in range(200):
            port = _pick.randrange(_LOWEST, top)
            if port in _given:
                continue
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _given.add(port)
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    _given.add(port)
    return port
