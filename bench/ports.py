"""Ports for servers that tests and benches start on this machine (tests/test_celery.py, bench/soak.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    """A port free now, from the kernel's ephemeral range (bind to port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def quiet_port() -> int:
    """A free port below the kernel's ephemeral range (ip_local_port_range), so no bind(0) or outgoing connection
    of another process takes it while it is unbound (between choosing it and the server binding it, or across a
    Redis restart on it); the search starts at a point of this process's own, so concurrent runs differ."""
    try:
        low = min(int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]), 32768)
    except (OSError, ValueError, IndexError):  # not Linux: the range IANA and most systems use
        low = 32768
    span = low - 10000
    if span < 1000:  # an unusual range: no quiet ports to choose from
        return free_port()
    start = os.getpid() * 7 % span
    for step in range(span):
        port = 10000 + (start + step) % span
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()
