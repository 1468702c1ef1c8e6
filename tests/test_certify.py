"""The certification harness: the shipped suite, broken cases, the case format's
errors, card-data masking in reports and recordings, and its configuration keys."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from conftest import Pki
from netsim_client import auth, connect, run
from test_netsim_cli import _start_serve

import codec
from codec import dialect
from gateway.config import ConfigError, load_config
from gateway.payments import messages
from gateway.payments.machine import Unknown
from netsim.certify import SUITES
from netsim.certify.matchers import CaseError, Exact, Mismatch, Seen, shown
from netsim.certify.recorder import Recorder
from netsim.certify.replay_cli import load_script
from netsim.certify.script import load_case, load_suite

PAYGATE = str(Path(sys.executable).with_name("paygate"))
BASE = SUITES / "base"


def _certify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PAYGATE, "certify", *args], capture_output=True, text=True,
                          timeout=600, check=False)


def test_shipped_suite_passes_and_writes_junit(tmp_path: Path) -> None:
    """`paygate certify base --junit` passes every shipped case (at least 25) and writes
    JUnit XML with one testcase per case, the connect check included, and no failure."""
    suite = load_suite(BASE)
    assert len(suite.cases) >= 25
    out = tmp_path / "out.xml"
    run = _certify("base", "--junit", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    root = ET.parse(out).getroot()
    names = [c.get("name") for c in root.iter("testcase")]
    assert names == ["connect", *(c.name for c in suite.cases)]
    assert root.get("failures") == "0"
    assert not list(root.iter("failure"))
    assert "0 failed" in run.stdout


def _broken_suite(tmp_path: Path) -> Path:
    folder = tmp_path / "broken"
    folder.mkdir()
    shutil.copy(BASE / "suite.json", folder / "suite.json")
    case = json.loads((BASE / "approve-manual.json").read_text())
    case["exchanges"][0]["expect"]["fields"]["22"] = "051"
    (folder / "approve-manual.json").write_text(json.dumps(case))
    return folder


def test_broken_case_fails_naming_the_field(tmp_path: Path) -> None:
    """A copy of a shipped case expecting a wrong field 22 fails (exit 1) with a report and
    a JUnit failure naming the case, the exchange, field 22, expected and actual."""
    out = tmp_path / "out.xml"
    run = _certify(str(_broken_suite(tmp_path)), "--junit", str(out))
    assert run.returncode == 1, run.stdout + run.stderr
    line = "approve-manual: exchange 0 (0100) field 22: expected '051', got '812'"
    assert line in run.stdout
    failures = list(ET.parse(out).getroot().iter("failure"))
    assert len(failures) == 1
    assert failures[0].get("message") == line


def test_bad_case_file_is_refused_naming_file_and_path(tmp_path: Path) -> None:
    """A case with an unknown matcher is refused (exit 2) naming the file and the JSON path."""
    folder = tmp_path / "bad"
    folder.mkdir()
    case = json.loads((BASE / "approve-manual.json").read_text())
    case["exchanges"][0]["expect"]["fields"]["4"] = {"roughly": "1001"}
    (folder / "bad.json").write_text(json.dumps(case))
    run = _certify(str(folder))
    assert run.returncode == 2
    assert "bad.json: $.exchanges[0].expect.fields.4: unknown matcher 'roughly'" in run.stderr


def test_mismatches_never_show_card_data() -> None:
    """A PAN mismatch shows first 6 / last 4 only, and a card security code is never shown."""
    seen = Seen([], [])
    expected = Exact("4242424242424242").check("2", "4000056655665556", seen)
    assert expected == "'424242******4242'"
    mismatch = Mismatch("c", 0, "0100", "2", expected, shown("2", "4000056655665556"))
    assert "4000056655665556" not in mismatch.render()
    assert "400005******5556" in mismatch.render()
    assert "123" not in shown("48", "CVC03123")


def _auth(pan: str) -> bytes:
    return codec.encode({"t": "0100", "2": pan, "3": "000000", "4": "000000001000",
                         "7": "1123010203", "11": "000001", "41": "TERM0001",
                         "48": "CVC03123", "49": "978"}, dialect.SPEC)


def test_recorder_masks_other_cards_and_every_cvc(tmp_path: Path) -> None:
    """The recorder keeps a test card's PAN, masks any other PAN and every CVC, and leaves
    out the raw bytes of any frame it had to mask."""
    path = tmp_path / "session.jsonl"
    recorder = Recorder(path)
    recorder.frame("in", _auth("5555555555554444"))
    recorder.frame("in", _auth("4242424242424242"))
    recorder.close()
    text = path.read_text()
    assert "5555555555554444" not in text
    assert "CVC03123" not in text
    other, test = (json.loads(line) for line in text.splitlines())
    assert other["fields"]["2"] == "555555******4444"
    assert other["hex"] is None
    assert test["fields"]["2"] == "4242424242424242"
    assert test["fields"]["48"] == "CVC03***"
    assert test["hex"] is None and test["mti"] == "0100" and test["dir"] == "in"


def test_reply_without_response_code_is_unknown() -> None:
    """A reply without field 39 tells nothing of the outcome: Unknown (then reversed), not
    a decline (the suite's malformed-missing-39 case proves the reversal end to end)."""
    assert isinstance(messages.outcome({"t": "0110", "11": "000001", "41": "TERM0001"}),
                      Unknown)
    assert messages.outcome({"t": "0110", "39": "05"}).code == "05"  # type: ignore[union-attr]


def test_certification_settings_are_config_keys() -> None:
    """The echo interval and the reconciler's pace are configuration keys, checked by name."""
    config = load_config(None, environ={"PAYGATE_RECONCILER_BACKOFF_INITIAL_SECONDS": "0.1",
                                        "PAYGATE_NETWORK_ECHO_INTERVAL_SECONDS": "2"})
    assert config.reconciler.backoff_initial_seconds == 0.1
    assert config.network.echo_interval_seconds == 2.0
    with pytest.raises(ConfigError, match=r"reconciler\.backoff_jitter"):
        load_config(None, environ={"PAYGATE_RECONCILER_BACKOFF_JITTER": "2"})


def test_schema_and_loader_agree(tmp_path: Path) -> None:
    """A case using every property case.schema.json declares (case, payment, action,
    reply, outcome) loads, so the documented schema and the loader do not drift apart."""
    schema = json.loads((SUITES.parent / "case.schema.json").read_text())
    props = schema["properties"]
    reply_props = schema["$defs"]["reply"]["oneOf"][1]["properties"]
    assert set(reply_props) == {"none", "delay", "mti", "code", "fields", "raw", "truncate"}
    case: dict[str, Any] = {
        "$schema": "../case.schema.json", "name": "all", "description": "every key",
        "payment": {"card": "4242424242424242", "amount": 1, "currency": "eur",
                    "capture_method": "manual", "cvc": "123", "exp_month": 1,
                    "exp_year": 2035, "merchant": "acme"},
        "actions": [{"do": "wait", "amount": 0, "seconds": 0.1, "expect_error": ""}],
        "exchanges": [{"expect": {"mti": "0100", "strict": False,
                                  "fields": {"2": {"present": True}, "55": {"absent": True},
                                             "4": {"regex": "\\d{12}"}, "11": "000001"}},
                       "reply": {"none": False, "delay": 0, "mti": "0110", "code": "00",
                                 "fields": {"38": None}, "raw": "00", "truncate": 1}},
                      {"expect": {"mti": "0420", "fields": {"90": {"original_of": 0},
                                                            "37": {"same": "0.37"},
                                                            "38": {"same": "0.reply.38"}}},
                       "reply": None}],
        "outcome": {"confirm_status": "processing", "status": "canceled",
                    "error": {"code": "", "decline_code": "", "network_response_code": ""},
                    "amount_capturable": 0, "amount_received": 0, "amount_refunded": 0},
        "timeout": 5,
    }
    assert set(case) == set(props)
    assert set(case["payment"]) == set(props["payment"]["properties"])
    assert set(case["outcome"]) == set(props["outcome"]["properties"])
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "all.json").write_text(json.dumps(case))
    loaded = load_suite(folder).cases[0]
    assert loaded.exchanges[1].reply.none and loaded.payment.merchant == "acme"


def test_approval_without_approval_code_is_unknown() -> None:
    """An approving 0110 without field 38 cannot be captured, so it is Unknown (reversed);
    other approving replies need no 38."""
    reply = {"t": "0110", "11": "000001", "41": "TERM0001", "39": "00"}
    assert isinstance(messages.outcome(reply), Unknown)
    assert not isinstance(messages.outcome({**reply, "38": "A1B2C3"}), Unknown)
    assert not isinstance(messages.outcome({**reply, "t": "0230"}), Unknown)


def test_netsim_serve_records_with_card_data_masked(pki: Pki, tmp_path: Path) -> None:
    """`paygate netsim serve --record FILE` writes every frame both ways as a JSON line;
    a non-test card's PAN (also echoed in the 0110) and the CVC never reach the file."""
    recording = tmp_path / "session.jsonl"
    proc, port = _start_serve(pki, tmp_path, "--ledger", str(tmp_path / "l.db"),
                              "--record", str(recording))
    try:
        async def main() -> str:
            client = await connect(port, pki)
            reply = await client.request({**auth("5555555555554444"), "48": "CVC03987"})
            await client.close()
            return reply["39"]

        assert run(main()) == "00"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = recording.read_text()
    assert "5555555555554444" not in text and "CVC03987" not in text
    frames = [json.loads(line) for line in text.splitlines()]
    assert [(f["dir"], f["mti"]) for f in frames] == [
        ("in", "0800"), ("out", "0810"), ("in", "0100"), ("out", "0110")]
    assert frames[2]["fields"]["2"] == frames[3]["fields"]["2"] == "555555******4444"
    assert frames[2]["hex"] is None and frames[3]["hex"] is None
    assert frames[1]["hex"] and frames[1]["fields"]["39"] == "00"


def test_replay_command_reads_a_case_file_with_its_suite_templates() -> None:
    """`paygate netsim replay` takes a case file too: its exchanges, with the templates of
    the suite.json beside it merged in."""
    exchanges = load_script(BASE / "void.json")
    assert [e.mti for e in exchanges] == ["0100", "0400"]
    assert exchanges[0].fields["22"] == Exact("812")   # from the suite's 0100 template


def test_numbers_outside_the_schema_are_refused_at_load(tmp_path: Path) -> None:
    """Amounts outside 1..999999999999 (0.. for actions), negative delays and seconds and a
    timeout that is not > 0 are refused when the case loads, naming the JSON path."""
    base = json.loads((BASE / "capture-partial.json").read_text())
    path = tmp_path / "case.json"
    bad: list[tuple[str, Any, str]] = [
        ("payment.amount", -5, "minor units from 1 to 999999999999"),
        ("payment.amount", 0, "minor units from 1 to 999999999999"),
        ("payment.amount", 10**30, "minor units from 1 to 999999999999"),
        ("actions[0].amount", 10**12, "minor units from 0 to 999999999999"),
        ("actions[0].amount", -1, "minor units from 0 to 999999999999"),
        ("actions[0].seconds", -1, "seconds >= 0"),
        ("exchanges[0].reply.delay", -1, "seconds >= 0"),
        ("timeout", -1, "seconds > 0"),
        ("timeout", 0, "seconds > 0"),
        ("timeout", float("nan"), "seconds > 0"),
    ]
    for where, value, expected in bad:
        case = json.loads(json.dumps(base))
        if where == "payment.amount":
            case["payment"]["amount"] = value
        elif where.startswith("actions"):
            case["actions"][0][where.rsplit(".", 1)[1]] = value
        elif where.startswith("exchanges"):
            case["exchanges"][0]["reply"]["delay"] = value
        else:
            case["timeout"] = value
        path.write_text(json.dumps(case))
        with pytest.raises(CaseError) as exc:
            load_case(path)
        assert str(exc.value) == f"{path}: $.{where}: expected {expected}", (where, value)
    base["payment"]["amount"] = 999_999_999_999
    path.write_text(json.dumps(base))
    assert load_case(path).payment.amount == 999_999_999_999
