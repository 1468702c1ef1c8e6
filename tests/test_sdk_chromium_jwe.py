"""A JWE made by the SDK's jwe.js inside Chromium opens on the server, through each HSM
backend, with each key-management algorithm that backend declares.

``sdk/js/tools/encrypt-in-chromium.mjs`` loads ``sdk/js/src/jwe.js`` into a page of
Debian's Chromium (playwright-core, never a downloaded browser) and encrypts a card to
the JWKS it is given, with WebCrypto. The software HSM opens RSA-OAEP-256 (what the SDK
prefers) and RSA-OAEP; the PKCS#11 backend on SoftHSM2 2.6.1 does RSA-OAEP with SHA-1
only, publishes its keys with ``alg: RSA-OAEP``, and WebCrypto's RSA-OAEP with hash
SHA-1 is what applies there: the SDK picks it from the JWKS on its own. Chromium or
Node missing fails these tests (they never skip for that).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import edge_stack
import pytest

from hsm_sim import Hsm

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "sdk" / "js"
TOOL = SDK / "tools" / "encrypt-in-chromium.mjs"
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}


def encrypt_in_chromium(jwks: dict[str, Any], *, algs: list[str] | None = None,
                        force_alg: str | None = None) -> tuple[str, str]:
    """(compact JWE, Chromium's user agent) from the SDK's jwe.js running in Chromium."""
    node = shutil.which("node")
    assert node is not None, "Node.js is not installed (apt-get install nodejs npm)"
    assert (SDK / "node_modules" / "playwright-core").is_dir(), \
        "sdk/js/node_modules is missing: run `make test` (it runs npm ci in sdk/js)"
    request = {"jwks": jwks, "card": CARD, "algs": algs or ["RSA-OAEP-256", "RSA-OAEP"],
               "force_alg": force_alg}
    proc = subprocess.run([node, str(TOOL)], input=json.dumps(request), capture_output=True,
                          text=True, timeout=120, cwd=SDK, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    return str(out["jwe"]), str(out["user_agent"])


def header_of(compact: str) -> dict[str, Any]:
    first = compact.split(".", maxsplit=1)[0]
    header: dict[str, Any] = json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))
    return header


def tokenize_with(tmp_path: Path, hsm: Hsm, compact: str) -> Any:
    stack = edge_stack.build(tmp_path, hsm=hsm)
    try:
        return asyncio.run(stack.intake.tokenize("acme", compact))
    finally:
        stack.close()


@pytest.mark.parametrize("alg", ["RSA-OAEP-256", "RSA-OAEP"])
def test_a_chromium_jwe_opens_in_the_software_hsm(tmp_path: Path, alg: str) -> None:
    """The software HSM opens what jwe.js made in Chromium, with RSA-OAEP-256 and RSA-OAEP."""
    from hsm_sim.software import SoftwareHsm

    hsm = SoftwareHsm(tmp_path / "hsm", environ={})
    assert alg in hsm.jwe_algorithms
    jwks = hsm.jwks()
    if alg == "RSA-OAEP-256":
        compact, agent = encrypt_in_chromium(jwks)       # the SDK's own choice
    else:
        compact, agent = encrypt_in_chromium(jwks, force_alg=alg)
    assert "Chrom" in agent
    assert header_of(compact) == {"alg": alg, "enc": "A256GCM", "kid": jwks["keys"][0]["kid"]}
    result = tokenize_with(tmp_path, hsm, compact)
    assert (result.brand, result.last4, result.exp_month, result.exp_year) == \
        ("visa", "4242", 12, 2034)
    assert result.token != CARD["number"]


def test_a_chromium_jwe_opens_in_the_pkcs11_hsm(tmp_path: Path) -> None:
    """SoftHSM2 (RSA-OAEP with SHA-1 only) opens what jwe.js made in Chromium after
    choosing RSA-OAEP from that backend's JWKS by itself."""
    from softhsm import make_token

    from hsm_sim.pkcs11 import Pkcs11Hsm

    token = make_token(tmp_path, "sdk-chromium")
    hsm = Pkcs11Hsm(token.module, token.label, token.pin)
    assert hsm.jwe_algorithms == frozenset({"RSA-OAEP"})
    jwks = hsm.jwks()
    compact, _ = encrypt_in_chromium(jwks)
    assert header_of(compact) == {"alg": "RSA-OAEP", "enc": "A256GCM",
                                  "kid": jwks["keys"][0]["kid"]}
    result = tokenize_with(tmp_path, hsm, compact)
    assert (result.brand, result.last4) == ("visa", "4242")
