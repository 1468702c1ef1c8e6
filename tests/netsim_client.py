"""A tiny ISO 8583 test client for netsim's tests (a helper module, not tests).

It speaks the dialect by hand over mutual TLS: ``codec.encode`` /
``codec.decode`` with ``codec.dialect.SPEC`` and ``codec.framing``. Plus message
builders for every request netsim handles and :func:`serving`, which runs a
netsim over a fresh ledger for one test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from conftest import Pki

import codec
from codec import dialect, framing
from gateway.pki import client_context, server_context
from netsim import Faults, Ledger, NetSim

T = TypeVar("T")

TERMINAL = "TERM0001"
MERCHANT = "MERCHANT0000001"
ACQUIRER = "440001"
APPROVE = "4242424242424242"
DECLINE = "4000000000000002"
NO_FUNDS = "4000000000009995"
SYSTEM_ERROR = "4000000000000119"
LOST = "4000000000000259"
SLOW = "4000000000000267"
SHORT_WAIT = 0.3

_stans = itertools.count(1)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one test's coroutine on a fresh event loop."""
    return asyncio.run(coro)


def next_stan() -> str:
    """A STAN not used before in this test session."""
    return f"{next(_stans) % 1_000_000:06d}"


def transmitted() -> str:
    return dialect.transmission_time()


class Client:
    """One mutual-TLS connection to netsim that sends and receives decoded messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, context: ssl.SSLContext) -> Client:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost")
        return cls(reader, writer)

    async def send(self, doc: dict[str, str]) -> None:
        await framing.write_frame(self.writer, codec.encode(doc, dialect.SPEC))

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (no length header added)."""
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self, timeout: float = 5.0) -> dict[str, str] | None:
        """The next message, or None when nothing arrives within ``timeout`` or the
        connection ends."""
        try:
            payload = await asyncio.wait_for(framing.read_frame(self.reader), timeout)
        except TimeoutError:
            return None
        return None if payload is None else codec.decode(payload, dialect.SPEC)

    async def request(self, doc: dict[str, str], timeout: float = 5.0) -> dict[str, str]:
        await self.send(doc)
        reply = await self.receive(timeout)
        assert reply is not None, f"no reply to {doc['t']} stan {doc.get('11')}"
        return reply

    async def sign_on(self) -> None:
        reply = await self.request(network(dialect.SIGN_ON))
        assert reply["39"] == "00"

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """Whether the server ends this connection (EOF, reset or TLS alert) in time."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except TimeoutError:
            return False
        except (OSError, ConnectionError):
            return True
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def connect(port: int, pki: Pki, *, sign_on: bool = True) -> Client:
    """A connection with the gateway's client certificate, signed on unless told not."""
    client = await Client.connect(port, client_context(pki.gateway))
    if sign_on:
        await client.sign_on()
    return client


@contextlib.asynccontextmanager
async def serving(pki: Pki, tmp_path: Path, *, faults: Faults | None = None,
                  slow_delay: float = SHORT_WAIT) -> AsyncIterator[NetSim]:
    """A running netsim over a fresh ledger in ``tmp_path``; closes both afterwards."""
    ledger = Ledger(tmp_path / "netsim.db")
    try:
        async with NetSim(server_context(pki.netsim), ledger, faults=faults,
                          slow_delay=slow_delay) as sim:
            yield sim
    finally:
        ledger.close()


# ---------------------------------------------------------------- message builders


def network(code: str, stan: str | None = None) -> dict[str, str]:
    return {"t": "0800", "7": transmitted(), "11": stan or next_stan(), "32": ACQUIRER,
            "41": TERMINAL, "70": code}


def auth(pan: str = APPROVE, amount: int = 1999, *, stan: str | None = None,
         expiry: str = "3012", terminal: str = TERMINAL, currency: str = "978"
         ) -> dict[str, str]:
    stan = stan or next_stan()
    when = transmitted()
    return {
        "t": "0100", "2": pan, "3": dialect.PURCHASE, "4": f"{amount:012d}", "7": when,
        "11": stan, "12": when[4:], "13": when[:4], "14": expiry, "18": "5999", "22": "812",
        "25": "59", "32": ACQUIRER, "37": f"{when[:6]}{stan}", "41": terminal,
        "42": MERCHANT, "49": currency,
    }


def _refer(mti: str, original: dict[str, str], amount: int, code: str) -> dict[str, str]:
    return {
        "t": mti, "3": code, "4": f"{amount:012d}", "7": transmitted(), "11": next_stan(),
        "32": ACQUIRER, "37": original["37"], "41": original["41"], "42": original["42"],
        "49": original["49"],
        "90": dialect.original_data("0100", original["11"], original["7"], ACQUIRER),
    }


def capture(original: dict[str, str], approval_code: str, amount: int) -> dict[str, str]:
    when = transmitted()
    return {**_refer("0220", original, amount, dialect.PURCHASE), "12": when[4:],
            "13": when[:4], "38": approval_code}


def refund(original: dict[str, str], amount: int) -> dict[str, str]:
    when = transmitted()
    return {**_refer("0200", original, amount, dialect.REFUND), "12": when[4:], "13": when[:4]}


def reversal(original: dict[str, str], mti: str = "0400") -> dict[str, str]:
    return _refer(mti, original, int(original["4"]), original["3"])


_REPEAT_OF = {base: repeat_mti for repeat_mti, base in dialect.REPEATS.items()}


def repeat(message: dict[str, str]) -> dict[str, str]:
    """The repeat (0221, 0201, 0401) of a 0220, 0200 or 0400: the same fields, STAN and
    field 7 included, under the repeat MTI."""
    return {**message, "t": _REPEAT_OF[message["t"]]}
