"""A TCP gate on 127.0.0.1: shows that an async read leaves its event loop free, without timing anything.

The gate holds a read's first bytes until a coroutine of the same loop opens it, so the read can only end if
that coroutine ran while the read was under way. A loop blocked by the read would leave the gate to open by
itself after ``Gate.HOLD`` seconds, and ``forced`` says so.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from tests.gcs_faults import pipe


class Gate:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` that holds the first bytes of every connection
    until :meth:`open`. ``reached`` is set when a connection's first bytes arrive; ``forced`` when the gate
    let them through after ``HOLD`` seconds without being opened."""

    HOLD = 30.0

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.split("://")[-1].rpartition(":")
        self.upstream = (host, int(port))
        self.reached = threading.Event()
        self.opened = threading.Event()
        self.forced = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, name="gate", daemon=True).start()

    def open(self) -> None:
        self.opened.set()

    def close(self) -> None:
        self.opened.set()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(client,), name="gate", daemon=True).start()

    def _hold(self, client: socket.socket) -> None:
        first = client.recv(1 << 16)
        if not first:
            client.close()
            return
        self.reached.set()
        if not self.opened.wait(self.HOLD):
            self.forced = True
        upstream = socket.create_connection(self.upstream)
        upstream.sendall(first)
        threading.Thread(target=pipe, args=(upstream, client), name="gate", daemon=True).start()
        pipe(client, upstream)


async def open_when_reached(gate: Gate, read: asyncio.Future[Any]) -> None:
    """Run beside ``read`` (a task of the same loop) until its bytes reach the gate, then open the gate."""
    while not gate.reached.is_set():
        assert not read.done(), "the read ended before it reached the gate"
        await asyncio.sleep(0.001)
    assert not read.done()  # held at the gate while this coroutine runs on the same loop
    gate.open()
