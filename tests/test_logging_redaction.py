"""gateway.logging: no PAN, track data, CVC, PIN or key material ever reaches a log line."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gateway.logging import (
    REDACTED,
    configure_logging,
    get_logger,
    redact_card_data,
)

VISA = "4242424242424242"
MASTERCARD = "5555555555554444"
AMEX = "378282246310005"
DISCOVER = "6011111111111117"
UNIONPAY = "6250941006528599"
UNIONPAY_19 = "6250941006528599008"
SHORT_12 = "500000000009"
PANS = [VISA, MASTERCARD, AMEX, DISCOVER, UNIONPAY, UNIONPAY_19, SHORT_12]


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _masked(pan: str) -> str:
    if len(pan) >= 13:
        return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]
    return "*" * (len(pan) - 4) + pan[-4:]


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """A stream to configure logging with; structlog and the root logger are restored after."""
    root = logging.getLogger()
    level = root.level
    yield io.StringIO()
    for handler in list(root.handlers):
        if isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter):
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def test_test_pans_are_luhn_valid() -> None:
    """Every test PAN passes Luhn and the 19- and 12-digit boundaries are really covered."""
    assert all(_luhn(pan) for pan in PANS)
    assert {len(pan) for pan in PANS} >= {12, 15, 16, 19}


@pytest.mark.parametrize("pan", PANS)
def test_pan_in_message_is_masked(out: io.StringIO, pan: str) -> None:
    """A PAN interpolated into the event message is written as first 6 / last 4 only."""
    configure_logging(stream=out)
    get_logger("gateway.test").info(f"authorizing card {pan} now")
    text = out.getvalue()
    assert pan not in text
    assert f"authorizing card {_masked(pan)} now" in text


def test_pan_in_keyword_argument_is_masked(out: io.StringIO) -> None:
    """A PAN passed as an arbitrary keyword value is masked."""
    configure_logging(stream=out)
    get_logger("gateway.test").info("charge", card_ref=VISA)
    text = out.getvalue()
    assert VISA not in text
    assert f"card_ref={_masked(VISA)}" in text


def test_pan_nested_in_dict_and_list_is_masked(out: io.StringIO) -> None:
    """PANs inside nested dicts, lists and tuples are masked and the caller's objects untouched."""
    payload = {"outer": {"cards": [MASTERCARD, ("x", AMEX)], "note": f"was {DISCOVER}"}}
    configure_logging(stream=out)
    get_logger("gateway.test").info("nested", payload=payload)
    text = out.getvalue()
    for pan in (MASTERCARD, AMEX, DISCOVER):
        assert pan not in text
        assert _masked(pan) in text
    assert payload["outer"]["cards"] == [MASTERCARD, ("x", AMEX)]


@pytest.mark.parametrize("sep", [" ", "-"])
def test_grouped_pan_is_masked(out: io.StringIO, sep: str) -> None:
    """A PAN written in groups separated by single spaces or dashes is masked."""
    grouped = sep.join(VISA[i:i + 4] for i in range(0, 16, 4))
    configure_logging(stream=out)
    get_logger("gateway.test").info(f"card {grouped} entered", display=grouped)
    text = out.getvalue()
    assert grouped not in text
    assert f"{VISA[4:8]}{sep}{VISA[8:12]}" not in text
    assert text.count(_masked(VISA)) == 2


def test_pan_followed_by_short_group_is_masked() -> None:
    """A grouped PAN followed by another short group (an expiry month) still has its PAN masked."""
    event = redact_card_data(None, "info", {"event": "4242 4242 4242 4242 12/30"})
    assert event["event"] == f"{_masked(VISA)} 12/30"


@pytest.mark.parametrize(
    "key", ["cvc", "cvv", "CVV2", "cid", "pin", "pin_block", "password", "secret",
            "master_key", "private_key", "key_material", "Authorization", "Cookie", "pan",
            "number", "card_number", "track2", "encrypted_card"])
def test_sensitive_keys_are_redacted(out: io.StringIO, key: str) -> None:
    """The value of a sensitive key is replaced entirely, even when it is short or Luhn-invalid."""
    configure_logging(stream=out)
    get_logger("gateway.test").info("card entered", **{key: "v@lue737"}, nested={key: ["12", "x"]})
    text = out.getvalue()
    assert "v@lue737" not in text
    assert "'12'" not in text
    assert f"{key}={REDACTED}" in text
    assert f"'{key}': '{REDACTED}'" in text


@pytest.mark.parametrize(
    "key", ["token", "kid", "idempotency_key", "publishable_key", "numbers", "pin_count"])
def test_ordinary_keys_are_kept(key: str) -> None:
    """Vault tokens, key ids and keys that merely look related keep their values."""
    event = redact_card_data(None, "info", {"event": "x", key: "tok_4242abcd"})
    assert event[key] == "tok_4242abcd"


@pytest.mark.parametrize(
    "track", [f";{VISA}=30121011234567890?", f"{VISA}=3012101123", f"{VISA}D30121011234567890"])
def test_track_two_becomes_masked_pan(out: io.StringIO, track: str) -> None:
    """Track 2 data (``=`` or field 35's ``D`` separator) is reduced to the masked PAN alone."""
    configure_logging(stream=out)
    get_logger("gateway.test").info(f"swiped [{track}]", raw=track)
    text = out.getvalue()
    assert VISA not in text
    assert "30121011234" not in text
    assert f"swiped [{_masked(VISA)}]" in text
    assert f"raw={_masked(VISA)}" in text


def test_track_one_becomes_masked_pan(out: io.StringIO) -> None:
    """Track 1 data loses the cardholder name and discretionary data; the PAN is masked."""
    track = f"%B{MASTERCARD}^DOE/JOHN^30121010000000000000?"
    configure_logging(stream=out)
    get_logger("gateway.test").info(f"swiped [{track}]")
    text = out.getvalue()
    assert MASTERCARD not in text
    assert "DOE/JOHN" not in text
    assert "3012101000" not in text
    assert f"swiped [{_masked(MASTERCARD)}]" in text


def test_iso8583_message_fields_are_redacted(out: io.StringIO) -> None:
    """In an ISO 8583 dict (MTI key "t") the PAN, track, PIN block and chip fields are redacted."""
    message = {"t": "0100", "2": VISA, "3": "000000", "4": "000000001999", "11": "000123",
               "35": f"{VISA}=30121011234567890", "36": "0123", "45": f"B{VISA}^DOE/J^3012",
               "52": "A1B2C3D4E5F60718", "55": "9F2608AABBCCDDEEFF0011"}
    original = dict(message)
    configure_logging(stream=out)
    get_logger("gateway.test").info("sending", msg=message)
    text = out.getvalue()
    for field in ("2", "35", "36", "45", "52", "55"):
        assert f"'{field}': '{REDACTED}'" in text
    for secret in (VISA, "A1B2C3D4E5F60718", "9F2608AABB", "DOE/J"):
        assert secret not in text
    assert "'4': '000000001999'" in text
    assert "'11': '000123'" in text
    assert message == original


def test_numeric_keys_outside_a_message_are_kept() -> None:
    """Field-number keys are only sensitive inside a dict that carries an MTI."""
    event = redact_card_data(None, "info", {"event": "x", "counts": {"2": "abc", "52": "def"}})
    assert event["counts"] == {"2": "abc", "52": "def"}


def test_exception_traceback_has_no_pan(out: io.StringIO) -> None:
    """A traceback rendered by log.exception shows the exception but not the PAN in its message."""
    configure_logging(stream=out)
    log = get_logger("gateway.test")
    try:
        raise ValueError(f"declined card {VISA}")
    except ValueError:
        log.exception("charge failed")
    text = out.getvalue()
    assert "Traceback (most recent call last)" in text
    assert f"ValueError: declined card {_masked(VISA)}" in text
    assert VISA not in text


def test_exception_object_as_value_is_redacted(out: io.StringIO) -> None:
    """An exception passed as a keyword value is rendered with str() and redacted."""
    configure_logging(stream=out)
    get_logger("gateway.test").warning("retrying", error=RuntimeError(f"bad {AMEX}"))
    text = out.getvalue()
    assert AMEX not in text
    assert f"bad {_masked(AMEX)}" in text


def test_foreign_stdlib_record_is_redacted(out: io.StringIO) -> None:
    """A plain logging record from a third-party library (aiohttp.access) is redacted too."""
    configure_logging(stream=out)
    logging.getLogger("aiohttp.access").info('"GET /pay?pan=%s HTTP/1.1" 200', DISCOVER)
    text = out.getvalue()
    assert DISCOVER not in text
    assert f"/pay?pan={_masked(DISCOVER)} HTTP/1.1" in text
    assert "aiohttp.access" in text


def test_foreign_exception_traceback_is_redacted(out: io.StringIO) -> None:
    """A stdlib logger.exception record has its rendered traceback redacted."""
    configure_logging(stream=out)
    try:
        raise KeyError(f"no card {UNIONPAY_19}")
    except KeyError:
        logging.getLogger("asyncio").exception("task failed for %s", MASTERCARD)
    text = out.getvalue()
    assert "Traceback (most recent call last)" in text
    assert UNIONPAY_19 not in text
    assert MASTERCARD not in text
    assert _masked(UNIONPAY_19) in text
    assert _masked(MASTERCARD) in text


def test_json_mode_writes_valid_redacted_lines(out: io.StringIO) -> None:
    """In JSON mode every line is one valid JSON object and card data is redacted."""
    configure_logging(stream=out, json=True)
    log = get_logger("gateway.test")
    log.info(f"card {VISA}", cvv="123", card={"number": VISA, "token": "tok_1"})
    logging.getLogger("grpc").warning("peer sent %s", MASTERCARD)
    try:
        raise ValueError(f"bad {AMEX}")
    except ValueError:
        log.exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["event"] == f"card {_masked(VISA)}"
    assert first["cvv"] == REDACTED
    assert first["card"] == {"number": REDACTED, "token": "tok_1"}
    assert first["level"] == "info"
    assert "timestamp" in first
    assert second["event"] == f"peer sent {_masked(MASTERCARD)}"
    assert second["logger"] == "grpc"
    assert f"ValueError: bad {_masked(AMEX)}" in third["exception"]
    for pan in (VISA, MASTERCARD, AMEX):
        assert pan not in out.getvalue()


@pytest.mark.parametrize(
    "value", ["000000001999", "000123", "1762251000", "1762251000123", "000000000000",
              "2026-11-04 10:20:30", "74992156123001234567892", "2026 1104 1020 3045"])
def test_non_card_digit_runs_are_untouched(out: io.StringIO, value: str) -> None:
    """Amounts, STANs, timestamps and other Luhn-invalid or over-long digit runs stay readable."""
    configure_logging(stream=out, json=True)
    get_logger("gateway.test").info(f"value {value}", value=value)
    line = json.loads(out.getvalue())
    assert line["event"] == f"value {value}"
    assert line["value"] == value


def test_configure_twice_writes_one_line_per_event(out: io.StringIO) -> None:
    """Calling configure_logging twice leaves a single handler: one line per event."""
    configure_logging(stream=out)
    configure_logging(stream=out)
    get_logger("gateway.test").info("structlog event")
    logging.getLogger("aiohttp.server").info("stdlib record")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    ours = [h for h in logging.getLogger().handlers
            if isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)]
    assert len(ours) == 1


def test_level_filters_events(out: io.StringIO) -> None:
    """Events below the configured level are dropped and an unknown level is rejected."""
    configure_logging("warning", stream=out)
    log = get_logger("gateway.test")
    log.info("hidden")
    log.warning("shown")
    assert "hidden" not in out.getvalue()
    assert "shown" in out.getvalue()
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("loud", stream=out)


def test_context_variables_are_redacted(out: io.StringIO) -> None:
    """Values bound with structlog.contextvars go through redaction on both paths."""
    configure_logging(stream=out, json=True)
    structlog.contextvars.bind_contextvars(pan=VISA, note=f"card {MASTERCARD}", request_id="r1")
    get_logger("gateway.test").info("ours")
    logging.getLogger("aiohttp.access").info("theirs")
    for line in out.getvalue().splitlines():
        event = json.loads(line)
        assert event["pan"] == REDACTED
        assert event["note"] == f"card {_masked(MASTERCARD)}"
        assert event["request_id"] == "r1"


def test_jwe_is_replaced() -> None:
    """A compact JWE (five base64url segments) is replaced by a placeholder."""
    jwe = ("eyJhbGciOiJSU0EtT0FFUC0yNTYiLCJlbmMiOiJBMjU2R0NNIn0.OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZ"
           ".48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6ji"
           ".XFBoMYUZodetZdvTiFvSkQ")
    event = redact_card_data(None, "info", {"event": f"got {jwe}", "body": {"card": jwe},
                                            "version": "1.2.3.4.5"})
    assert event["event"] == "got [JWE]"
    assert event["body"] == {"card": "[JWE]"}
    assert event["version"] == "1.2.3.4.5"


def test_bytes_and_header_pairs_are_redacted() -> None:
    """Bytes are decoded and masked; (name, value) pairs with a sensitive name are redacted."""
    event = redact_card_data(None, "info", {
        "event": "x", "raw": f"PAN={VISA};".encode(),
        "metadata": (("authorization", "Bearer abc"), ("x-request-id", "r1")),
    })
    assert event["raw"] == f"PAN={_masked(VISA)};"
    assert event["metadata"] == (("authorization", REDACTED), ("x-request-id", "r1"))


def test_dataclass_fields_are_redacted() -> None:
    """A dataclass value is walked field by field, so its sensitive fields are redacted."""

    @dataclasses.dataclass
    class Card:
        pan: str
        cvc: str
        label: str

    event = redact_card_data(None, "info", {"event": "x", "card": Card(VISA, "123", VISA)})
    assert event["card"] == {"__type__": "Card", "pan": REDACTED, "cvc": REDACTED,
                             "label": _masked(VISA)}


def test_other_objects_are_redacted_through_repr() -> None:
    """An unknown object whose repr() holds a PAN becomes its redacted repr; clean ones stay."""

    class Opaque:
        def __repr__(self) -> str:
            return f"Opaque({VISA})"

    clean = object()
    event = redact_card_data(None, "info", {"event": "x", "dirty": Opaque(), "clean": clean})
    assert event["dirty"] == f"Opaque({_masked(VISA)})"
    assert event["clean"] is clean


def test_module_configures_the_stdlib_root_logger(out: io.StringIO) -> None:
    """gateway.logging does not shadow the stdlib: it installs its handler on logging's root."""
    before = len(logging.getLogger().handlers)
    configure_logging(stream=out)
    assert len(logging.getLogger().handlers) == before + 1
    assert logging.getLogger().level == logging.INFO


def test_other_root_handlers_see_only_redacted_events(out: io.StringIO) -> None:
    """Redaction happens inside structlog, so any other root handler gets a clean event dict."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    configure_logging(stream=out)
    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        try:
            raise ValueError(f"declined {VISA}")
        except ValueError:
            get_logger("gateway.test").exception("failed", cvc="123")
    finally:
        logging.getLogger().removeHandler(keep)
    (record,) = records
    assert isinstance(record.msg, dict)
    assert record.msg["cvc"] == REDACTED
    assert f"ValueError: declined {_masked(VISA)}" in record.msg["exception"]
    assert VISA not in repr(record.msg)


def test_every_paygate_command_logs_redacted_to_stderr(
        out: io.StringIO, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A command that never configures logging itself (here `paygate pki init`) still logs
    through the redacting pipeline, to stderr only: stdout stays the command's output."""
    from gateway.cli import main

    assert main(["pki", "init", "--dir", str(tmp_path / "pki")]) == 0
    capsys.readouterr()
    structlog.get_logger("hsm_sim").warning(f"card {VISA} seen", cvc="123")
    captured = capsys.readouterr()
    assert _masked(VISA) in captured.err and VISA not in captured.err
    assert "123" not in captured.err and REDACTED in captured.err
    assert "card" not in captured.out


def test_netsim_serve_logs_json_through_the_redacting_pipeline(
        out: io.StringIO, capsys: pytest.CaptureFixture[str]) -> None:
    """`paygate netsim serve` writes one JSON object per line on stderr, with card data
    redacted like the gateway's own lines."""
    from netsim.cli import _configure_logging

    _configure_logging("debug")
    structlog.get_logger("netsim").debug("authorization", card=MASTERCARD, field_35=f"{VISA}=2512")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "authorization" and line["level"] == "debug"
    assert MASTERCARD not in json.dumps(line) and VISA not in json.dumps(line)
    assert line["card"] in (_masked(MASTERCARD), REDACTED)
