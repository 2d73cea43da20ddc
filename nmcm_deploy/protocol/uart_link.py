"""The UART link preambles of the `qemu` target (docs/protocol.md, "Under QEMU").

A node under QEMU has one connection per UART, and a UART cannot tell that a peer went away or
came back. The side that connects therefore starts every connection with OPEN; the node answers
ACCEPT when it has taken the connection (dropping whatever an earlier peer left on that UART), and
frames follow as on TCP. A node that receives bytes for no connection answers RESET. The frames
themselves are unchanged. The C++ side is ``firmware/runtime/uart``.
"""

from __future__ import annotations

import socket
import time

from nmcm_deploy.protocol.errors import ConnectionClosed, ProtocolTimeout

# 0xA5 never occurs again in a preamble: a receiver matches it without looking back.
LINK_PREFIX = b"\xa5NMCM-UART-LINK"
OPEN = LINK_PREFIX + b"O"
ACCEPT = LINK_PREFIX + b"A"
RESET = LINK_PREFIX + b"R"
PREAMBLE_SIZE = len(OPEN)


def open_uart_link(sock: socket.socket, timeout: float) -> None:
    """Say OPEN on a fresh connection to a node's UART port and wait for its ACCEPT.

    Whatever comes before the ACCEPT is the tail of an earlier connection (or a RESET that crossed
    our OPEN) and is dropped; nothing comes after it until this side's HELLO, so the socket is
    left at the node's first frame. Raises ProtocolTimeout if no ACCEPT arrives in time (another
    client holds the UART, whose chardev takes one connection at a time, or no firmware runs)
    and ConnectionClosed if QEMU closes the connection.
    """
    deadline = time.monotonic() + timeout
    try:
        sock.settimeout(timeout)
        sock.sendall(OPEN)
    except OSError as exc:
        raise ConnectionClosed(f"connection failed: {exc}") from None
    seen = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProtocolTimeout("no ACCEPT from the node's UART")
        sock.settimeout(remaining)
        try:
            # Peek, then take only up to the end of the ACCEPT: the bytes after it are frames.
            chunk = sock.recv(4096, socket.MSG_PEEK)
        except (TimeoutError, BlockingIOError):
            raise ProtocolTimeout("no ACCEPT from the node's UART") from None
        except OSError as exc:
            raise ConnectionClosed(f"connection failed: {exc}") from None
        if not chunk:
            raise ConnectionClosed("connection closed before the node's ACCEPT")
        window = seen + chunk
        found = window.find(ACCEPT)
        take = len(chunk) if found < 0 else found + PREAMBLE_SIZE - len(seen)
        sock.recv(take)
        if found >= 0:
            return
        seen = window[-(PREAMBLE_SIZE - 1) :]
