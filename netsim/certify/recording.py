"""A recorded session (:mod:`netsim.certify.recorder`'s file) as a replay script.

Each recorded request (a request MTI, either direction) becomes one exchange,
network management (0800) aside: the replay host answers that itself. The request's
fields are expected exactly, but for the ones that change from run to run: field 7,
11, 12, 13 and 37 (format only), 48 (a card security code of 3 or 4 digits), a
masked PAN in field 2 (first 6 and last 4 only) and field 90 (the original's MTI and
the acquirer exactly, its STAN and time by format). Its reply is the recorded
response with the same (41, 11) that followed it (none: no reply), sent after the
recorded delay when that was longer than ``min_delay``, with the fields the network
echoes (2, 7, 11, 12, 13, 37) taken from the actual request.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from codec import dialect
from netsim.certify.matchers import CaseError, Exact, Matcher, Present, Regex
from netsim.certify.script import Exchange, Reply, read_text
from netsim.server import RESPONSE_FIELDS

__all__ = ["load_recording", "to_exchanges"]

_FORMATS = {"7": r"\d{10}", "11": r"\d{6}", "12": r"\d{6}", "13": r"\d{4}"}
_ECHOED_FROM_REQUEST = ("2", "7", "11", "12", "13", "37")


def _matcher(key: str, value: str) -> Matcher:
    if key in _FORMATS:
        return Regex(_FORMATS[key])
    if key == "37":
        return Present()
    if key == "48" and value.startswith("CVC"):
        return Regex(r"CVC0[34]\d{3,4}")
    if key == "2" and "*" in value:
        return Regex(re.escape(value[:6]) + r"\d+" + re.escape(value[-4:]))
    if key == "90" and len(value) == 42:
        return Regex(re.escape(value[:4]) + r"\d{16}" + re.escape(value[20:]))
    return Exact(value)


def to_exchanges(frames: list[dict[str, Any]], min_delay: float = 0.1) -> tuple[Exchange, ...]:
    """The replay script of a recording's frames (see the module docstring)."""
    out: list[Exchange] = []
    for i, frame in enumerate(frames):
        mti = frame.get("mti")
        if mti not in dialect.REQUEST_MTIS or mti == "0800":
            continue
        fields: dict[str, str] = frame["fields"]
        answer, key = dialect.RESPONSE_MTI[mti], (fields.get("41"), fields.get("11"))
        reply = next((f for f in frames[i + 1:] if f.get("mti") == answer
                      and (f["fields"].get("41"), f["fields"].get("11")) == key), None)
        if reply is None:
            script_reply = Reply(none=True)
        else:
            recorded = reply["fields"]
            overrides: dict[str, str | None] = {
                k: v for k, v in recorded.items() if k not in _ECHOED_FROM_REQUEST}
            for k in RESPONSE_FIELDS[answer]:
                if k not in recorded:
                    overrides[k] = None
            delay = float(reply["t"]) - float(frame["t"])
            script_reply = Reply(delay=delay if delay > min_delay else 0.0, fields=overrides)
        out.append(Exchange(mti, {k: _matcher(k, v) for k, v in fields.items()},
                            script_reply, strict=True))
    return tuple(out)


def load_recording(path: Path, min_delay: float = 0.1) -> tuple[Exchange, ...]:
    """Read a recording file and turn it into a replay script."""
    frames: list[dict[str, Any]] = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            frame = json.loads(line)
        except RecursionError:
            raise CaseError(f"{path}:{n}: not valid JSON (nested too deeply)") from None
        except ValueError:
            raise CaseError(f"{path}:{n}: not a JSON line") from None
        if (not isinstance(frame, dict) or frame.get("dir") not in ("in", "out")
                or not isinstance(frame.get("fields"), dict)
                or not isinstance(frame.get("t"), int | float)):
            raise CaseError(f"{path}:{n}: expected an object with t, dir (in/out), mti, "
                            "fields, hex")
        frames.append(frame)
    return to_exchanges(frames, min_delay)
