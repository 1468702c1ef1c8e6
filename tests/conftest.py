"""Shared fixtures: the installed build under test, and both codec implementations."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from gateway.pki import Authority, Credentials

ROOT = Path(__file__).resolve().parent.parent

import codec  # noqa: E402
from codec import _twin  # noqa: E402

# The suite tests what `pip install .` built into the venv, not the source tree.
if Path(codec.__file__).resolve().parent == ROOT / "codec":
    raise RuntimeError(
        "tests imported codec from the source tree; run them with `make test` "
        "(which installs the build into .venv and runs .venv/bin/pytest)"
    )

KERNEL_EXPECTED = os.environ.get("PAYGATE_NO_EXTENSIONS", "") in ("", "0")


def _kernel() -> ModuleType | None:
    try:
        from codec import _kernel  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _kernel  # type: ignore[no-any-return]


KERNEL = _kernel()
IMPLEMENTATIONS = [
    pytest.param(KERNEL, id="kernel", marks=pytest.mark.skipif(
        not KERNEL_EXPECTED, reason="PAYGATE_NO_EXTENSIONS=1: the kernel is not built")),
    pytest.param(_twin, id="twin"),
]


@pytest.fixture(params=IMPLEMENTATIONS, scope="session")
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """Each codec implementation in turn: the Cython kernel, then the pure-Python twin."""
    module = request.param
    if module is None:
        pytest.fail("the Cython kernel (codec._kernel) was expected but is not importable")
    assert isinstance(module, ModuleType)
    return module


@dataclass(frozen=True)
class Pki:
    """Credentials for mutual TLS on loopback: one CA, and a foreign CA for negative tests."""

    netsim: Credentials        # server certificate for 127.0.0.1 / localhost
    gateway: Credentials       # client certificate "gateway", same CA
    foreign: Credentials       # client certificate issued by another CA
    folder: Path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A dev CA with netsim's server and the gateway's client credentials, plus a client
    certificate from an unrelated CA."""
    folder = tmp_path_factory.mktemp("pki")
    authority = Authority("paygate test CA")
    other = Authority("some other CA")
    return Pki(
        netsim=authority.write(folder, "netsim", server=True),
        gateway=authority.write(folder, "gateway"),
        foreign=other.write(folder / "foreign", "intruder"),
        folder=folder,
    )


@pytest.fixture
def python() -> str:
    """The interpreter of the venv under test, for subprocess checks."""
    return sys.executable
