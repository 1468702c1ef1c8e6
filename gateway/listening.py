"""Listening sockets that fail with a sentence, not a traceback.

:class:`CannotListen` says which address could not be bound, for what
(``"the HTTP edge"``, ``"gRPC"``, ...) and why (``address already in use``, the
resolver's ``Name or service not known``, ...); the commands print it and exit 1.
"""

from __future__ import annotations

import argparse
import os
import socket


class CannotListen(OSError):
    """``address`` (``HOST:PORT``) could not be bound for ``what``, because ``reason``."""

    def __init__(self, address: str, reason: str, what: str = "") -> None:
        super().__init__(f"cannot listen on {address}{f' for {what}' if what else ''}: "
                         f"{reason}")
        self.address = address
        self.reason = reason
        self.what = what

    def __str__(self) -> str:
        return str(self.args[0])


def reason(exc: OSError) -> str:
    """Why ``exc`` happened, in a few words (``address already in use``)."""
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if exc.errno and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    return exc.strerror or str(exc) or type(exc).__name__


def port_number(text: str) -> int:
    """An ``argparse`` type for a TCP port option: 0 to 65535 (0: any free one)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not in 0..65535")
    return port


def address(host: str, port: int | str) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def probe(host: str, port: int) -> str:
    """Why binding ``host:port`` fails (for a library, such as grpc, that does not say):
    resolve it and bind a plain socket, without ``SO_REUSEPORT``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        return reason(exc) if isinstance(exc, OSError) else "not a valid host name"
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(sockaddr)
        except OSError as exc:
            return reason(exc)
    return "the server could not bind it"
