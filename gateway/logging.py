"""The gateway's one logging setup, and the guarantee that card data never reaches a log line.

This module owns how every log line is produced: `configure_logging` sets up structlog *and*
the standard library's root logger (through `structlog.stdlib.ProcessorFormatter`), so events
from the gateway and records from third-party libraries (aiohttp, asyncio, grpc, ...) all pass
through the same redaction processor, `redact_card_data`, before they are rendered. A PAN,
track data, CVC, PIN, or key material must never be written out; amounts, STANs and timestamps
must stay readable.

Note on the name: imports are absolute, so ``import logging`` here (and anywhere else in the
package) is the standard library; this module is ``gateway.logging``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import unicodedata
from collections.abc import Mapping
from typing import IO, Any, Final

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from codec.errors import mask_pan

__all__ = [
    "ISO_SENSITIVE_FIELDS", "LEVELS", "REDACTED", "SENSITIVE_KEYS", "configure_logging",
    "get_logger", "has_card_data", "redact_card_data", "redact_text",
]

#: The log levels a command or the configuration may name.
LEVELS: Final = ("debug", "info", "warning", "error", "critical")
REDACTED: Final = "[REDACTED]"
JWE: Final = "[JWE]"

#: Keys whose value is replaced wholesale, matched exactly after lower-casing and turning ``-``
#: into ``_`` (so ``Authorization`` and ``Set-Cookie`` match). Deliberately *not* in the list:
#: ``token`` (vault tokens are not secret and Luhn-invalid by design), ``kid`` (a key id), and
#: names that merely end in ``_key`` such as ``idempotency_key`` or ``publishable_key``;
#: ``number`` matches only exactly.
SENSITIVE_KEYS: Final = frozenset({
    "pan", "card_number", "cardnumber", "number", "cvc", "cvc2", "cvv", "cvv2", "cid",
    "track", "track1", "track2", "track_data", "pin", "pin_block", "password", "passphrase",
    "secret", "client_secret", "api_key", "master_key", "private_key", "key_material",
    "zmk", "zpk", "bdk", "kek", "encrypted_card", "authorization", "proxy_authorization",
    "cookie", "set_cookie",
})

#: ISO 8583 fields redacted wholesale inside a message dict (one with an MTI key ``"t"``):
#: 2 PAN, 35 track 2, 36 track 3, 45 track 1, 52 PIN block, 55 EMV chip data.
ISO_SENSITIVE_FIELDS: Final = frozenset({"2", "35", "36", "45", "48", "52", "55"})

_MAX_DEPTH: Final = 16
_SCALARS: Final = (int, float, bool, type(None))

# One pass finds track 1, track 2 (``=`` or field 35's ``D`` separator) and digit runs of 12 or
# more digits, each possibly separated from the next by one space or dash.
_CARD_RE: Final = re.compile(
    r"(?P<t1>%?B(?P<t1pan>\d{12,19})\^(?:[^^\n]{0,26}\^[^?\s]*\??)?)"
    r"|(?P<t2>;?(?<!\d)(?P<t2pan>\d{12,19})[=D]\d{4,}F?\??)"
    r"|(?P<run>(?<!\d)\d(?:[ -]?\d){11,})",
    re.ASCII,
)
_GROUP_SEP_RE: Final = re.compile(r"[ -]")
_JWE_RE: Final = re.compile(
    r"(?<![\w.-])[\w-]{16,}\.[\w-]*\.[\w-]{16,}\.[\w-]+\.[\w-]{16,}(?![\w.-])", re.ASCII
)
_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _luhn_ok(digits: str) -> bool:
    """Whether *digits* (ASCII digits only) pass the Luhn check."""
    odd = sum(ord(c) - 48 for c in digits[-1::-2])
    even = sum(_DOUBLED[ord(c) - 48] for c in digits[-2::-2])
    return (odd + even) % 10 == 0


def _looks_like_pan(digits: str) -> bool:
    """12-19 digits, at least 12 of them significant (all-zero padding is no PAN), Luhn-valid."""
    return 12 <= len(digits) <= 19 and len(digits.lstrip("0")) >= 12 and _luhn_ok(digits)


def _mask_run(run: str) -> str:
    """Mask every Luhn-valid 12-19 digit span of *run*, spans aligned on its separators.

    The whole run is tried first, then the longest spans from the left, so that
    ``"4242 4242 4242 4242 12"`` (a PAN followed by an expiry month) still has its PAN masked.
    """
    if len(run) <= 19 and run.isdigit():
        return mask_pan(run) if _looks_like_pan(run) else run
    groups = _GROUP_SEP_RE.split(run)
    seps = [*_GROUP_SEP_RE.findall(run), ""]
    out: list[str] = []
    i = 0
    while i < len(groups):
        count, last = 0, i
        while last < len(groups) and count + len(groups[last]) <= 19:
            count += len(groups[last])
            last += 1
        for j in range(last, i, -1):  # span groups[i:j], longest first
            digits = "".join(groups[i:j])
            if _looks_like_pan(digits):
                out.append(mask_pan(digits) + seps[j - 1])
                i = j
                break
        else:
            out.append(groups[i] + seps[i])
            i += 1
    return "".join(out)


def _card_sub(match: re.Match[str]) -> str:
    if match.lastgroup == "run":
        return _mask_run(match.group("run"))
    pan = match.group("t1pan") or match.group("t2pan")
    return mask_pan(pan)


def redact_text(text: str) -> str:
    """*text* with track data and Luhn-valid PANs masked and compact JWEs replaced."""
    if len(text) < 12:
        return text
    out = _CARD_RE.sub(_card_sub, text)
    if out.count(".") >= 4:
        out = _JWE_RE.sub(JWE, out)
    return out


def has_card_data(text: str) -> bool:
    """Whether *text* holds what :func:`redact_text` would mask (a Luhn-valid PAN of 12-19
    digits, grouped or not, track data, or a compact JWE), also once its characters are
    in compatibility form (full-width or other Unicode digits) and with dots taken as
    group separators (``4111.1111.1111.1111``)."""
    plain = unicodedata.normalize("NFKC", text)
    dotted = plain.replace(".", " ")
    return redact_text(text) != text or redact_text(plain) != plain \
        or redact_text(dotted) != dotted


def _is_sensitive_key(key: object, iso_message: bool) -> bool:
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    if not isinstance(key, str):
        return False
    if iso_message and key in ISO_SENSITIVE_FIELDS:
        return True
    return key.lower().replace("-", "_") in SENSITIVE_KEYS


def _redact_mapping(value: Mapping[Any, Any], depth: int) -> dict[Any, Any]:
    iso_message = "t" in value
    out: dict[Any, Any] = {}
    for key, item in value.items():
        new_key = redact_text(key) if isinstance(key, str) else key
        out[new_key] = REDACTED if _is_sensitive_key(key, iso_message) else _walk(item, depth + 1)
    return out


def _walk(value: Any, depth: int) -> Any:
    """A redacted copy of *value*; the caller's objects are never modified."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, _SCALARS):
        return value
    if depth >= _MAX_DEPTH:
        return "[...]"
    if isinstance(value, bytes | bytearray | memoryview):
        return redact_text(bytes(value).decode("utf-8", "backslashreplace"))
    if isinstance(value, Mapping):
        return _redact_mapping(value, depth)
    if isinstance(value, list | tuple):
        # (name, value) pairs, as in gRPC metadata or HTTP header lists.
        if len(value) == 2 and _is_sensitive_key(value[0], False):
            return (value[0], REDACTED) if isinstance(value, tuple) else [value[0], REDACTED]
        items = [_walk(item, depth + 1) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, BaseException):
        return redact_text(str(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"__type__": type(value).__name__, **_redact_mapping(fields, depth)}
    # Anything else is rendered with repr() by both renderers: check exactly that text.
    text = repr(value)
    clean = redact_text(text)
    return value if clean == text else clean


def redact_card_data(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: a copy of *event_dict* with card data and secrets removed.

    Every value (and the ``event`` message itself) is walked recursively: strings, bytes,
    mappings, lists, tuples, dataclasses, exceptions (rendered with ``str()``) and any other
    object through its ``repr()``. Within them:

    1. a run of 12-19 digits, optionally grouped by single spaces or dashes, that passes the
       Luhn check is masked to first 6 / last 4 (`codec.errors.mask_pan`); other digit runs
       (amounts, STANs, timestamps) are left alone, as are all-zero padded fields;
    2. the value of a key in `SENSITIVE_KEYS` is replaced by ``[REDACTED]``, and so are the ISO
       8583 fields in `ISO_SENSITIVE_FIELDS` of a dict that has an MTI key ``"t"``, and the
       value of a ``(name, value)`` pair whose name is sensitive;
    3. track 1 (``%B<pan>^NAME^...?``) and track 2 (``;<pan>=<yymm>...?``, or ``D`` as the
       separator) are replaced by the masked PAN alone;
    4. a compact JWE (five base64url segments separated by dots) becomes ``[JWE]``.
    """
    out: EventDict = {}
    iso_message = "t" in event_dict
    for key, value in event_dict.items():
        if key in ("_record", "_from_structlog"):
            out[key] = value
        elif _is_sensitive_key(key, iso_message):
            out[key] = REDACTED
        elif key == "event" and not isinstance(value, str):
            out[key] = redact_text(str(value))
        else:
            out[key] = _walk(value, 0)
    return out


class _RedactingHandler(logging.StreamHandler[IO[str]]):
    """The root handler installed by `configure_logging` (recognised to stay idempotent)."""


def configure_logging(
    level: str = "info", *, json: bool = False, stream: IO[str] | None = None
) -> None:
    """Configure structlog and the stdlib root logger to write redacted lines to *stream*.

    *level* is a stdlib level name (``"debug"``, ``"info"``, ...); *json* selects one JSON
    object per line instead of the human console format; *stream* defaults to ``sys.stderr``.
    Calling it again replaces the previous configuration instead of adding a second handler.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            timestamper,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            # Redact before the event leaves structlog: any other handler on the root logger
            # (a test harness, say) then only ever sees the clean event dict.
            redact_card_data,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,  # so that a later configure_logging() takes effect
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # Records from other libraries: the same context, level, name and timestamp ...
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            timestamper,
        ],
        # ... and for every record, whatever its origin, the traceback as text, then redaction.
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_card_data,
            renderer,
        ],
    )
    handler = _RedactingHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _RedactingHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named *name*, routed through the configured (redacting) pipeline."""
    return structlog.stdlib.get_logger(name)
