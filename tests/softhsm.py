"""SoftHSM2 tokens for the tests (a helper module, not tests).

SoftHSM reads ``SOFTHSM2_CONF`` and scans its token directory once, at
``C_Initialize``, and python-pkcs11 initialises a module once per process. A
token that ``softhsm2-util`` creates afterwards stays invisible until
``C_Finalize`` + ``C_Initialize``, which would kill every open session, and a
changed ``SOFTHSM2_CONF`` would hide all the earlier tokens. (Checked with
SoftHSM 2.6.1: a token made by ``softhsm2-util`` after the first
``pkcs11.lib(...)`` is not listed by ``get_tokens()`` until ``reinitialize()``.)

So the helper keeps one configuration per process: the first :func:`make_token`
writes ``softhsm2.conf`` and ``tokens/`` into its ``folder`` and sets
``SOFTHSM2_CONF``; later calls add tokens to that same directory (their
``folder`` is then unused). Before the library is loaded a token is made with
``softhsm2-util --init-token --free``; once it is loaded, in-process with
``C_InitToken`` on the free slot and ``C_InitPIN``, which SoftHSM shows at once
without disturbing open sessions. Labels are made unique per process (``-2``,
``-3``… appended), so a fixture may ask for the same label in every test:
use the label of the returned :class:`SoftHsmToken`.

Without SoftHSM2 (``apt-get install softhsm2``; ``.ci/run`` installs it) the
tests that need it fail, unless ``PAYGATE_SKIP_SOFTHSM=1`` asks to skip them.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

#: The SoftHSM2 PKCS#11 module, symlinks resolved (the path python-pkcs11 and
#: ``Pkcs11Hsm`` key the loaded library by, so that it is initialised only once).
SOFTHSM_MODULE: Final = os.path.realpath(
    os.environ.get("PAYGATE_SOFTHSM_MODULE", "/usr/lib/softhsm/libsofthsm2.so"))
SKIP_ENV: Final = "PAYGATE_SKIP_SOFTHSM"
_LABEL_MAX: Final = 32


@dataclass
class _State:
    """This process's SoftHSM configuration and the labels handed out so far."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    conf: Path | None = None
    labels: set[str] = field(default_factory=set)


_state = _State()


@dataclass(frozen=True)
class SoftHsmToken:
    """An initialised SoftHSM2 token: open it with ``Pkcs11Hsm(module, label, pin)``."""

    module: str
    label: str
    pin: str = field(repr=False)
    conf: Path
    so_pin: str = field(repr=False, default="")


def softhsm_available() -> bool:
    """Whether the SoftHSM2 module and ``softhsm2-util`` are installed."""
    return Path(SOFTHSM_MODULE).is_file() and shutil.which("softhsm2-util") is not None


def require_softhsm() -> None:
    """Fail the calling test when SoftHSM2 is missing (skip if ``PAYGATE_SKIP_SOFTHSM=1``)."""
    if softhsm_available():
        return
    message = (f"SoftHSM2 is not installed (no {SOFTHSM_MODULE} or no softhsm2-util): "
               f"apt-get install softhsm2, or set {SKIP_ENV}=1 to skip the PKCS#11 tests")
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


def _library_initialised() -> bool:
    """Whether python-pkcs11 has already initialised a module in this process."""
    import pkcs11
    return any(getattr(lib, "initialized", False) for lib in pkcs11._loaded.values())


def _configure(folder: Path) -> Path:
    if _state.conf is None:
        if _library_initialised():
            raise RuntimeError("a PKCS#11 module was initialised before make_token() "
                               "configured SoftHSM; create the first token earlier")
        tokens = folder / "tokens"
        tokens.mkdir(parents=True, exist_ok=True)
        conf = folder / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                        f"log.level = ERROR\nslots.removable = false\n", "utf-8")
        os.environ["SOFTHSM2_CONF"] = str(conf)
        _state.conf = conf
    return _state.conf


def _unique(label: str) -> str:
    base, n = label[:_LABEL_MAX], 1
    candidate = base
    while candidate in _state.labels:
        n += 1
        suffix = f"-{n}"
        candidate = base[:_LABEL_MAX - len(suffix)] + suffix
    _state.labels.add(candidate)
    return candidate


def _init_with_util(label: str, pin: str, so_pin: str) -> None:
    result = subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label,
         "--pin", pin, "--so-pin", so_pin],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"softhsm2-util --init-token failed ({result.returncode}): "
                           f"{result.stderr.strip() or result.stdout.strip()}")


def _init_in_process(label: str, pin: str, so_pin: str) -> None:
    import pkcs11
    from pkcs11 import TokenFlag

    lib = pkcs11.lib(SOFTHSM_MODULE)
    free = [slot for slot in lib.get_slots()
            if not slot.get_token().flags & TokenFlag.TOKEN_INITIALIZED]
    if not free:
        raise RuntimeError("SoftHSM has no free slot")
    so = ctypes.CDLL(SOFTHSM_MODULE)        # the same, already initialised, library
    so.C_InitToken.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong,
                               ctypes.c_char_p]
    so.C_InitToken.restype = ctypes.c_ulong
    raw_so_pin = so_pin.encode()
    rv = so.C_InitToken(free[0].slot_id, raw_so_pin, len(raw_so_pin),
                        label.encode().ljust(_LABEL_MAX))
    if rv != 0:
        raise RuntimeError(f"C_InitToken failed: CKR 0x{rv:08x}")
    with lib.get_token(token_label=label).open(rw=True, so_pin=so_pin) as session:
        session.init_pin(pin)


def make_token(folder: Path, label: str) -> SoftHsmToken:
    """A fresh SoftHSM2 token labelled ``label`` (or ``label-N`` if taken), random PINs."""
    require_softhsm()
    with _state.lock:
        conf = _configure(folder)
        label = _unique(label)
        pin, so_pin = secrets.token_hex(8), secrets.token_hex(8)
        if _library_initialised():
            _init_in_process(label, pin, so_pin)
        else:
            _init_with_util(label, pin, so_pin)
        return SoftHsmToken(SOFTHSM_MODULE, label, pin, conf, so_pin)
