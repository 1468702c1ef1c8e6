"""Fuzzing decode: whatever the bytes, the result is a dict or a DecodeError."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec import examples, specs
from codec.errors import DecodeError

SPECS = [specs.network, specs.network_ascii]


def _decode_or_error(impl: ModuleType, data: bytes, spec: dict[str, object]) -> None:
    try:
        result = impl.decode(data, spec)
    except DecodeError as exc:
        assert 0 <= exc.pos <= len(data)
        return
    assert isinstance(result, dict)
    assert all(isinstance(v, str) for v in result.values())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600), which=st.sampled_from([0, 1]))
def test_random_bytes_only_raise_decode_error(impl: ModuleType, data: bytes,
                                              which: int) -> None:
    """Arbitrary bytes never raise anything but DecodeError."""
    _decode_or_error(impl, data, SPECS[which])


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[bytes, int]:
    which = draw(st.sampled_from([0, 1]))
    from codec import _twin

    raw = bytearray(_twin.encode(examples.auth_request(), SPECS[which]))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos:]
        elif op == "insert":
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif raw:
            del raw[pos]
    return bytes(raw), which


def _outcome(impl: ModuleType, data: bytes, spec: dict[str, object]) -> object:
    try:
        return impl.decode(data, spec)
    except DecodeError as exc:
        assert 0 <= exc.pos <= len(data)
        return (exc.msg, exc.field, exc.pos, exc.partial)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_mutated())
def test_mutated_messages_only_raise_decode_error(case: tuple[bytes, int]) -> None:
    """A valid 0100 with bytes flipped, cut, inserted or deleted decodes or raises
    DecodeError, and the kernel and the twin give the same outcome."""
    from conftest import KERNEL, KERNEL_EXPECTED

    from codec import _twin

    data, which = case
    twin = _outcome(_twin, data, SPECS[which])
    if KERNEL_EXPECTED:
        assert KERNEL is not None
        assert _outcome(KERNEL, data, SPECS[which]) == twin


FUZZER = textwrap.dedent("""
    import sys
    import atheris

    with atheris.instrument_imports():
        import codec
        from codec import _twin, examples, specs
    try:
        from codec import _kernel
    except ImportError:
        _kernel = None

    SPECS = [specs.network, specs.network_ascii]
    IMPLS = [m for m in (_twin, _kernel) if m is not None]

    def one_input(data: bytes) -> None:
        if not data:
            return
        spec = SPECS[data[0] & 1]
        outcomes = []
        for impl in IMPLS:
            try:
                outcomes.append(impl.decode(data[1:], spec))
            except codec.DecodeError as exc:
                outcomes.append((exc.msg, exc.field, exc.pos))
        if any(o != outcomes[0] for o in outcomes):
            raise AssertionError("kernel and twin disagree")

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
""")


def test_atheris_finds_no_other_exception(tmp_path: Path) -> None:
    """Coverage-guided fuzzing (atheris) of both implementations finds no exception other
    than DecodeError and no disagreement between kernel and twin."""
    pytest.importorskip("atheris")
    from codec import _twin

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, spec in enumerate(SPECS):
        for j, doc in enumerate((examples.auth_request(), examples.auth_response())):
            (corpus / f"seed{i}{j}").write_bytes(bytes([i]) + _twin.encode(doc, spec))
    script = tmp_path / "fuzz_decode.py"
    script.write_text(FUZZER)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [sys.executable, str(script), "-runs=100000", "-seed=1", "-max_len=700",
         f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 100000 runs" in proc.stderr


_KEYS = st.one_of(st.sampled_from(["t", "h", "p", "1", "65", "x", "", "0", "02", "193", "²"]),
                  st.integers(2, 192).map(str), st.integers(0, 3))
_VALUES = st.one_of(st.text(max_size=30), st.text("0123456789ABCDEFabcdef", max_size=40),
                    st.text("0123456789", max_size=20), st.binary(max_size=4), st.none())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.dictionaries(_KEYS, _VALUES, max_size=12), which=st.sampled_from([0, 1]))
def test_arbitrary_documents_encode_alike(doc: dict[object, object], which: int) -> None:
    """Any document, valid or not, encodes to the same bytes or the same EncodeError
    (message, field, offset, partial) in the kernel and in the twin."""
    from conftest import KERNEL, KERNEL_EXPECTED

    from codec import _twin
    from codec.errors import EncodeError

    outcomes = []
    for module in (_twin, KERNEL) if KERNEL_EXPECTED else (_twin,):
        assert module is not None
        try:
            outcomes.append(module.encode(doc, SPECS[which]))
        except EncodeError as exc:
            outcomes.append((exc.msg, exc.field, exc.pos, exc.partial))
    assert all(o == outcomes[0] for o in outcomes)
