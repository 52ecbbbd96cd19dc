"""The embedded Temporal dev server counts as started once its frontend answers a client, not
once its port is open: the port opens first, and a client connecting in between is refused with
"Frontend is not healthy yet" (a test run's first connect failed so, 0.15 s after the start)."""

from __future__ import annotations

import sys
import time

import pytest
from temporalio.client import Client

from sherwood.embedded import EmbeddedError, TemporalDevServer, free_port

# a server that opens the port and never speaks Temporal's protocol (what the dev server is
# between its port opening and its frontend being healthy)
SILENT = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)
"""


class SilentServer(TemporalDevServer):
    def command(self) -> list[str]:
        return [sys.executable, "-c", SILENT, str(self.port)]


def test_an_open_port_that_does_not_answer_as_temporal_is_not_started() -> None:
    server = SilentServer(port=free_port(), ui_port=None, db_file=None)
    began = time.monotonic()
    with pytest.raises(EmbeddedError, match="did not answer"):
        server.start(timeout=2)
    assert time.monotonic() - began < 15
    assert server.proc is not None and server.proc.poll() is not None  # not left running


async def test_a_started_dev_server_takes_a_client_at_once() -> None:
    server = TemporalDevServer(port=free_port(), ui_port=None, db_file=None)
    server.start()
    try:
        client = await Client.connect(server.address)  # no retry: it must answer now
        assert await client.service_client.check_health()
    finally:
        server.stop()
