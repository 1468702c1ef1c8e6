"""The case format: suites of JSON cases (``case.schema.json``), loaded and checked.

A suite is a directory: ``suite.json`` (optional: the suite's name, the sign-on
exchange checked at connect, and per-MTI field templates) and one ``*.json`` file
per case. A case names the payment the harness makes through the public gRPC API,
the follow-up actions, the exchanges the network sees (what the gateway must send,
what the network answers) and the outcome the gateway must reach. Every error names
the file and the JSON path. ``netsim/certify/README.md`` documents the format.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codec import dialect
from gateway.payments.money import FIELD4_MAX
from netsim.certify.matchers import CaseError, Matcher, parse_matcher

__all__ = ["Action", "Case", "Exchange", "Outcome", "Payment", "Reply", "Suite",
           "load_case", "load_suite", "load_templates", "parse_exchanges", "read_text"]

ACTIONS = ("capture", "cancel", "refund", "wait")
STATUSES = ("requires_payment_method", "processing", "requires_capture", "succeeded",
            "canceled")
_MTI = re.compile(r"\d{4}")
_FIELD = re.compile(r"[1-9]\d{0,2}")


@dataclass(frozen=True)
class Reply:
    """What the network answers: by default the response built from the request
    (response MTI, echoed fields, field 7 now, 39 = 00, 38 on approved 0110s)."""

    none: bool = False                       # no reply at all
    delay: float = 0.0                       # seconds before it is sent
    mti: str | None = None                   # a different MTI (e.g. unknown: 0190)
    fields: Mapping[str, str | None] = field(default_factory=dict)  # None: removed
    raw: bytes | None = None                 # this payload instead (framed as usual)
    truncate: int | None = None              # only the first N bytes of the payload


@dataclass(frozen=True)
class Exchange:
    """One message the gateway must send and the network's scripted reply."""

    mti: str
    fields: Mapping[str, Matcher]
    reply: Reply
    strict: bool = True      # a field the expectation does not name is a mismatch


@dataclass(frozen=True)
class Payment:
    card: str
    amount: int
    currency: str = "eur"
    capture_method: str = "manual"
    cvc: str = "123"
    exp_month: int = 12
    exp_year: int = 2034
    merchant: str = ""       # default: the stack's first merchant


@dataclass(frozen=True)
class Action:
    kind: str                # capture, cancel, refund, wait
    amount: int = 0
    seconds: float = 0.0
    expect_error: str = ""   # the gRPC status code name the call must fail with


@dataclass(frozen=True)
class Outcome:
    confirm_status: str = ""
    status: str = ""
    error: Mapping[str, str] = field(default_factory=dict)   # code, decline_code, ...
    amounts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    description: str
    payment: Payment
    actions: tuple[Action, ...]
    exchanges: tuple[Exchange, ...]
    outcome: Outcome
    timeout: float = 15.0


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    connect: tuple[Exchange, ...]
    cases: tuple[Case, ...]


# ------------------------------------------------------------------------ loading


def _obj(value: Any, where: str, keys: tuple[str, ...], required: tuple[str, ...] = ()
         ) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CaseError(f"{where}: expected an object")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise CaseError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(keys)})")
    missing = [k for k in required if k not in value]
    if missing:
        raise CaseError(f"{where}: missing {missing[0]!r}")
    return value


def _map(value: Any, where: str) -> dict[str, Any]:
    """An object with any keys (fields, templates)."""
    if not isinstance(value, dict):
        raise CaseError(f"{where}: expected an object")
    return value


def _typed(value: Any, tp: type[Any] | tuple[type[Any], ...], where: str, what: str) -> Any:
    if not isinstance(value, tp) or (isinstance(value, bool) and tp is not bool):
        raise CaseError(f"{where}: expected {what}")
    return value


def _amount(value: Any, where: str, low: int) -> int:
    """Minor units in ``low..FIELD4_MAX`` (an int64 the API takes, 12 digits in field 4)."""
    amount: int = _typed(value, int, where, f"minor units from {low} to {FIELD4_MAX}")
    if not low <= amount <= FIELD4_MAX:
        raise CaseError(f"{where}: expected minor units from {low} to {FIELD4_MAX}")
    return amount


def _seconds(value: Any, where: str, positive: bool = False) -> float:
    """A finite number of seconds, >= 0 (``positive``: > 0)."""
    what = "seconds > 0" if positive else "seconds >= 0"
    seconds = float(_typed(value, (int, float), where, what))
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        raise CaseError(f"{where}: expected {what}")
    return seconds


def _reply(value: Any, where: str) -> Reply:
    if value is None:
        return Reply(none=True)
    obj = _obj(value, where, ("none", "delay", "mti", "code", "fields", "raw", "truncate"))
    fields: dict[str, str | None] = {}
    for key, v in _map(obj.get("fields", {}), f"{where}.fields").items():
        if not _FIELD.fullmatch(key) or (v is not None and not isinstance(v, str)):
            raise CaseError(f"{where}.fields.{key}: expected a field number and a string "
                            "or null")
        fields[key] = v
    if "code" in obj:
        fields["39"] = _typed(obj["code"], str, f"{where}.code", "a response code")
    mti = obj.get("mti")
    if mti is not None and not (isinstance(mti, str) and _MTI.fullmatch(mti)):
        raise CaseError(f"{where}.mti: expected 4 digits")
    raw = None
    if "raw" in obj:
        try:
            raw = bytes.fromhex(_typed(obj["raw"], str, f"{where}.raw", "hex"))
        except ValueError:
            raise CaseError(f"{where}.raw: expected hex") from None
    truncate = obj.get("truncate")
    if truncate is not None and _typed(truncate, int, f"{where}.truncate", "a length") < 1:
        raise CaseError(f"{where}.truncate: expected a length >= 1")
    delay = _seconds(obj.get("delay", 0.0), f"{where}.delay")
    return Reply(none=obj.get("none") is True, delay=delay, mti=mti, fields=fields,
                 raw=raw, truncate=truncate)


def parse_exchanges(value: Any, where: str, templates: Mapping[str, Mapping[str, Any]]
                    ) -> tuple[Exchange, ...]:
    """The ``exchanges`` list of a case (or the suite's ``connect``)."""
    if not isinstance(value, list):
        raise CaseError(f"{where}: expected a list")
    out: list[Exchange] = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        obj = _obj(item, at, ("expect", "reply"), ("expect",))
        expect = _obj(obj["expect"], f"{at}.expect", ("mti", "fields", "strict"), ("mti",))
        mti = expect["mti"]
        if not isinstance(mti, str) or mti not in dialect.REQUEST_MTIS:
            raise CaseError(f"{at}.expect.mti: expected a request MTI "
                            f"({', '.join(sorted(dialect.REQUEST_MTIS))})")
        template = templates.get(mti, templates.get(dialect.REPEATS.get(mti, ""), {}))
        wanted = {**template, **_map(expect.get("fields", {}), f"{at}.expect.fields")}
        matchers: dict[str, Matcher] = {}
        for key, v in wanted.items():
            if not _FIELD.fullmatch(key):
                raise CaseError(f"{at}.expect.fields: {key!r} is not a field number")
            matchers[key] = parse_matcher(v, f"{at}.expect.fields.{key}", i)
        strict = _typed(expect.get("strict", True), bool, f"{at}.expect.strict", "a boolean")
        out.append(Exchange(mti, matchers, _reply(obj.get("reply", {}), f"{at}.reply"),
                            strict))
    return tuple(out)


def _payment(value: Any, where: str) -> Payment:
    obj = _obj(value, where, ("card", "amount", "currency", "capture_method", "cvc",
                              "exp_month", "exp_year", "merchant"), ("card", "amount"))
    card = _typed(obj["card"], str, f"{where}.card", "a card number (digits)")
    if not card.isdigit():
        raise CaseError(f"{where}.card: expected digits")
    method = obj.get("capture_method", "manual")
    if method not in ("manual", "automatic"):
        raise CaseError(f"{where}.capture_method: expected manual or automatic")
    return Payment(card=card, amount=_amount(obj["amount"], f"{where}.amount", 1),
                   currency=_typed(obj.get("currency", "eur"), str, f"{where}.currency",
                                   "a currency code"),
                   capture_method=method,
                   cvc=_typed(obj.get("cvc", "123"), str, f"{where}.cvc", "3 or 4 digits"),
                   exp_month=_typed(obj.get("exp_month", 12), int, f"{where}.exp_month", "1-12"),
                   exp_year=_typed(obj.get("exp_year", 2034), int, f"{where}.exp_year", "a year"),
                   merchant=_typed(obj.get("merchant", ""), str, f"{where}.merchant", "an id"))


def _actions(value: Any, where: str) -> tuple[Action, ...]:
    if not isinstance(value, list):
        raise CaseError(f"{where}: expected a list")
    out = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        obj = _obj(item, at, ("do", "amount", "seconds", "expect_error"), ("do",))
        if obj["do"] not in ACTIONS:
            raise CaseError(f"{at}.do: expected one of {', '.join(ACTIONS)}")
        out.append(Action(obj["do"],
                          _amount(obj.get("amount", 0), f"{at}.amount", 0),
                          _seconds(obj.get("seconds", 0.0), f"{at}.seconds"),
                          _typed(obj.get("expect_error", ""), str, f"{at}.expect_error",
                                 "a gRPC status code name")))
    return tuple(out)


def _outcome(value: Any, where: str) -> Outcome:
    obj = _obj(value, where, ("confirm_status", "status", "error", "amount_capturable",
                              "amount_received", "amount_refunded"))
    for key in ("confirm_status", "status"):
        if key in obj and obj[key] not in STATUSES:
            raise CaseError(f"{where}.{key}: expected one of {', '.join(STATUSES)}")
    error = _obj(obj.get("error", {}), f"{where}.error",
                 ("code", "decline_code", "network_response_code"))
    for key, v in error.items():
        _typed(v, str, f"{where}.error.{key}", "a string ('' for none)")
    amounts: dict[str, int] = {k: _typed(obj[k], int, f"{where}.{k}", "minor units") for k in
               ("amount_capturable", "amount_received", "amount_refunded") if k in obj}
    return Outcome(obj.get("confirm_status", ""), obj.get("status", ""), error, amounts)


def read_text(path: Path) -> str:
    """A case, suite or recording file's text (CaseError: missing, unreadable, not UTF-8)."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise CaseError(f"{path}: cannot read JSON: {exc}") from None


def _parse_json(text: str, where: str) -> Any:
    """``text`` as JSON (CaseError naming ``where``: not JSON, or nested too deeply)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise CaseError(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        raise CaseError(f"{where}: cannot read JSON: {exc}") from None


def _read(path: Path) -> Any:
    return _parse_json(read_text(path), str(path))


def load_case(path: Path, templates: Mapping[str, Mapping[str, Any]] | None = None) -> Case:
    """One case file (``templates``: the suite's per-MTI expected fields)."""
    where = f"{path}: $"
    obj = _obj(_read(path), where, ("$schema", "name", "description", "payment", "actions",
                                    "exchanges", "outcome", "timeout"),
               ("name", "payment", "exchanges", "outcome"))
    return Case(name=_typed(obj["name"], str, f"{where}.name", "a name"), path=path,
                description=_typed(obj.get("description", ""), str, f"{where}.description",
                                   "text"),
                payment=_payment(obj["payment"], f"{where}.payment"),
                actions=_actions(obj.get("actions", []), f"{where}.actions"),
                exchanges=parse_exchanges(obj["exchanges"], f"{where}.exchanges",
                                          templates or {}),
                outcome=_outcome(obj["outcome"], f"{where}.outcome"),
                timeout=_seconds(obj.get("timeout", 15.0), f"{where}.timeout", positive=True))


def _suite_meta(meta_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``suite.json`` (when there is one) and its checked per-MTI templates."""
    meta: dict[str, Any] = {}
    if meta_path.exists():
        meta = _obj(_read(meta_path), f"{meta_path}: $", ("$schema", "name", "description",
                                                           "connect", "templates"))
    templates = _map(meta.get("templates", {}), f"{meta_path}: $.templates")
    for mti, fields in templates.items():
        _map(fields, f"{meta_path}: $.templates.{mti}")
    return meta, templates


def load_templates(case_path: Path) -> dict[str, Any]:
    """The per-MTI templates of the ``suite.json`` beside a case file (none: empty)."""
    return _suite_meta(case_path.parent / "suite.json")[1]


def load_suite(directory: Path) -> Suite:
    """A suite directory: ``suite.json`` (optional) and its ``*.json`` cases, by name."""
    if not directory.is_dir():
        raise CaseError(f"{directory}: not a suite directory")
    meta_path = directory / "suite.json"
    meta, templates = _suite_meta(meta_path)
    connect = parse_exchanges(meta.get("connect", []), f"{meta_path}: $.connect", templates)
    cases = tuple(load_case(p, templates) for p in sorted(directory.glob("*.json"))
                  if p.name != "suite.json")
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CaseError(f"{directory}: two cases are named {dupes[0]!r}")
    return Suite(name=str(meta.get("name", directory.name)), path=directory, connect=connect,
                 cases=cases)
