"""``services.process.free_port``: each call a different port (pure, no service started)."""

from __future__ import annotations

import socket

from services.process import free_port


def test_free_port_never_hands_out_the_same_port_twice() -> None:
    # The kernel offers a just-released port again, so 1,000 plain bind(0) calls repeat
    # some; a configuration's ports must all differ.
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # free when handed out
