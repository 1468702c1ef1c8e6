"""The edge and requests that are not valid HTTP, sent as raw bytes on loopback: each is
refused as problem+json, and neither the answer nor the log quotes what was sent."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import edge_stack
import pytest
import structlog

from gateway.logging import configure_logging

PAN = "4111111111111111"
CVC = "6543"
CARD = f'{{"number":"{PAN}","cvc":"{CVC}"}}'.encode()
HEAD = b"POST /v1/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer pk_test_acme\r\n"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[edge_stack.Stack]:
    built = edge_stack.build(tmp_path)
    yield built
    built.close()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The redacting log pipeline, writing to a buffer (restored afterwards)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    yield stream
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


def exchange(stack: edge_stack.Stack, request: bytes) -> bytes:
    """Send ``request`` as is and read every byte the edge sends back until it closes."""
    async def main() -> bytes:
        async with edge_stack.serve(stack) as base:
            url = urlsplit(base)
            reader, writer = await asyncio.open_connection(url.hostname, url.port)
            writer.write(request)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return answer
    return asyncio.run(main())


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP/1.1 responses in ``raw`` (each with a Content-Length)."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        length = int(headers["content-length"])
        out.append((int(lines[0].split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return out


MALFORMED = {
    "data after Connection: close": HEAD + b"Content-Type: application/json\r\n"
    b"Content-Length: 3\r\nConnection: close\r\n\r\n" + CARD,
    "bad status line": f"GET /v1/tokens?pan={PAN}&cvc={CVC} HTTP/9.9\r\nHost: x\r\n\r\n".encode(),
    "bad header value": HEAD + f"X-Card: {PAN}\x00 cvc {CVC}\r\n\r\n".encode(),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_requests_get_a_problem_that_quotes_nothing(
        stack: edge_stack.Stack, log_lines: io.StringIO, case: str) -> None:
    """A request aiohttp cannot parse is a 400 problem+json with a stable code; the answer
    and the log carry neither the card number nor the CVC it contained."""
    answers = responses(exchange(stack, MALFORMED[case]))
    assert answers and answers[-1][0] == 400
    for status, headers, body in answers:
        assert headers["content-type"].startswith("application/problem+json"), body
        problem = json.loads(body)
        assert problem["status"] == status and problem["code"] in ("invalid_request",
                                                                   "invalid_json")
        assert PAN.encode() not in body and CVC.encode() not in body
    logged = log_lines.getvalue()
    assert "http_request_refused" in logged
    assert PAN not in logged and PAN[:6] + "******" + PAN[-4:] not in logged
    assert CVC not in logged


@pytest.mark.parametrize(("encoding", "body"), [
    (b"gzip", b"\x1f\x8b not gzip at all"), (b"gzip", gzip.compress(b"{}")),
    (b"br", b"{}"), (b"zstd", b"{}"),
])
def test_a_compressed_body_is_refused_before_it_is_read(
        stack: edge_stack.Stack, log_lines: io.StringIO, encoding: bytes, body: bytes) -> None:
    """A body sent with a Content-Encoding (valid or not, known to aiohttp or not) is a 415
    problem, not a 500, and nothing about it is logged beyond its type."""
    request = (HEAD + b"Content-Type: application/json\r\nContent-Encoding: " + encoding
               + f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
               + body)
    (status, headers, answer), = responses(exchange(stack, request))
    assert status == 415 and headers["content-type"].startswith("application/problem+json")
    assert json.loads(answer)["code"] == "unsupported_content_encoding"
    assert "Traceback" not in log_lines.getvalue()


def test_a_connection_without_a_complete_head_is_closed(stack: edge_stack.Stack) -> None:
    """A client that trickles its headers (or sends none) is disconnected after the idle
    timeout instead of holding the connection for good."""
    async def main() -> bytes:
        async with edge_stack.serve(stack, idle_timeout=0.3) as base:
            url = urlsplit(base)
            reader, writer = await asyncio.open_connection(url.hostname, url.port)
            writer.write(b"GET /v1/keys HTTP/1.1\r\nHost: x\r\n")     # no blank line
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return answer
    assert asyncio.run(main()) == b""


def test_a_body_that_does_not_arrive_in_time_is_a_408(stack: edge_stack.Stack) -> None:
    """A body announced but not sent within the body timeout is a 408 problem, and the
    connection closes."""
    async def main() -> bytes:
        async with edge_stack.serve(stack, body_timeout=0.3) as base:
            url = urlsplit(base)
            reader, writer = await asyncio.open_connection(url.hostname, url.port)
            writer.write(HEAD + b"Content-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return answer
    (status, headers, body), = responses(asyncio.run(main()))
    assert status == 408 and headers["content-type"].startswith("application/problem+json")
    assert json.loads(body)["code"] == "request_timeout"
