"""Free loopback TCP ports for servers the tests start in other processes.

A port the kernel hands out for ``bind(0)`` comes from its ephemeral range (Linux: 32768-60999), the same range
every outgoing connection's local port comes from: between the check here and the server's own bind, a client
of another test (or of the other pytest-xdist worker) could take it. So ports are drawn below that range, and each
xdist worker draws from its own slice, so two workers never pick the same one.
"""

from __future__ import annotations

import os
import random
import socket

LOW, HIGH = 20000, 32000  # below the ephemeral range; above most fixed service ports


def _slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # "gw0", "gw1", ...
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    index = int(worker[2:]) % count if worker[2:].isdigit() else 0
    width = (HIGH - LOW) // count
    return range(LOW + index * width, LOW + (index + 1) * width)


def unused_port(taken: set[int] | frozenset[int] = frozenset()) -> int:
    """A port of this worker's slice that nothing listens on now (and not in ``taken``)."""
    ports = _slice()
    for _ in range(500):
        port = random.choice(ports)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free loopback port in {ports.start}-{ports.stop - 1}")
