"""``free_port`` hands out ports the kernel will not give to anyone else in the meantime.

A port from ``bind(port 0)`` comes from the kernel's ephemeral range, the same range every
outgoing connection (Postgres, Redis, Temporal's gRPC) takes its local port from: between
``free_port`` returning and the server binding it, a connection could take it, and the server
then failed with EADDRINUSE (seen in CI: the fan-out in the chaos test, a metrics port in the dev
stack test). Ports below that range are never assigned by the kernel.
"""

from __future__ import annotations

import random
import socket

from sherwood.embedded import ephemeral_range, free_port


def test_ports_come_from_below_the_kernels_ephemeral_range() -> None:
    low, _ = ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert all(1024 <= p < low for p in ports), [p for p in ports if not 1024 <= p < low]


def test_a_port_is_not_handed_out_twice_by_one_process() -> None:
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


def test_a_port_in_use_is_not_handed_out() -> None:
    """Ports bound by someone else (not handed out by ``free_port``) never come back: with 900
    of the range's ports taken, 500 picks would meet about 25 of them without the bind check
    (900 sockets: under a default limit of 1,024 open files)."""
    low, _ = ephemeral_range()
    held: list[socket.socket] = []
    try:
        for port in random.sample(range(15000, low), 900):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            s.listen()
            held.append(s)
        taken = {s.getsockname()[1] for s in held}
        assert len(taken) > 600
        assert not taken & {free_port() for _ in range(500)}
    finally:
        for s in held:
            s.close()
