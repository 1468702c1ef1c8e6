"""The tokenization edge over real HTTP on loopback: JWKS, tokens, and every refusal as
problem+json with its own code, never echoing card data."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import edge_stack
import jwe_encoder
import pytest

from gateway.cards import luhn_digit
from gateway.intake import IntakePolicy

PAN = "4242424242424242"
Call = Callable[..., Awaitable[tuple[int, dict[str, Any], str]]]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[edge_stack.Stack]:
    built = edge_stack.build(tmp_path)
    yield built
    built.close()


def run_http(stack: edge_stack.Stack, scenario: Callable[[Call], Awaitable[None]],
             **app_options: int) -> None:
    """Serve the edge and run ``scenario(call)`` where ``call`` does one HTTP request."""
    async def main() -> None:
        async with edge_stack.serve(stack, **app_options) as base, aiohttp.ClientSession() as http:
            async def call(method: str, path: str, *, body: Any = None, raw: bytes | None = None,
                           key: str | None = "pk_test_acme",
                           content_type: str = "application/json",
                           ) -> tuple[int, dict[str, Any], str]:
                headers = {"Content-Type": content_type}
                if key is not None:
                    headers["Authorization"] = f"Bearer {key}"
                data = raw if raw is not None else (
                    json.dumps(body).encode() if body is not None else None)
                async with http.request(method, base + path, data=data, headers=headers) as r:
                    text = await r.text()
                    return r.status, dict(r.headers), text
            await scenario(call)
    asyncio.run(main())


def token_body(stack: edge_stack.Stack, **card: Any) -> dict[str, str]:
    return {"encrypted_card": jwe_encoder.encrypt_card(stack.jwk, **card)}


def problem_code(status: int, headers: dict[str, Any], text: str) -> str:
    assert headers["Content-Type"].startswith("application/problem+json"), text
    body = json.loads(text)
    assert body["status"] == status and body["type"].endswith(body["code"])
    assert PAN not in text and "4000000000000002" not in text
    return str(body["code"])


def test_keys_serves_the_public_jwks(stack: edge_stack.Stack) -> None:
    """GET /v1/keys returns the HSM's JWKS with kid, alg, use and no private members."""
    async def scenario(call: Call) -> None:
        status, headers, text = await call("GET", "/v1/keys", key=None)
        assert status == 200 and headers["Content-Type"].startswith("application/jwk-set+json")
        keys = json.loads(text)["keys"]
        assert keys == stack.hsm.jwks()["keys"]
        assert all(not {"d", "p", "q"} & k.keys() for k in keys)
    run_http(stack, scenario)


@pytest.mark.parametrize("alg", ["RSA-OAEP-256", "RSA-OAEP"])
def test_an_independently_encrypted_card_tokenizes(stack: edge_stack.Stack, alg: str) -> None:
    """A JWE made with `cryptography` (not our code) becomes a token with brand and last 4."""
    async def scenario(call: Call) -> None:
        status, headers, text = await call(
            "POST", "/v1/tokens", body=token_body(stack, alg=alg, exp_month=3, exp_year=2033))
        assert status == 200, text
        body = json.loads(text)
        assert body["brand"] == "visa" and body["last4"] == "4242"
        assert (body["exp_month"], body["exp_year"]) == (3, 2033)
        assert len(body["token"]) == 16 and body["token"] != PAN
        assert headers["Cache-Control"] == "no-store" and PAN not in text
        card = (await stack.vault.detokenize_for_network("acme", body["token"])).card
        assert card.pan == PAN
    run_http(stack, scenario)


def _tamper(compact: str, index: int) -> str:
    parts = compact.split(".")
    if index == 0:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=="))
        header["typ"] = "JWE"
        parts[0] = jwe_encoder.b64u(json.dumps(header).encode())
    else:
        raw = bytearray(base64.urlsafe_b64decode(parts[index] + "=" * (-len(parts[index]) % 4)))
        raw[len(raw) // 2] ^= 0x04
        parts[index] = jwe_encoder.b64u(bytes(raw))
    return ".".join(parts)


@pytest.mark.parametrize("index", range(5), ids=["header", "key", "iv", "ciphertext", "tag"])
def test_tampering_any_of_the_five_parts_fails(stack: edge_stack.Stack, index: int) -> None:
    """Changing the header, encrypted key, IV, ciphertext or tag gives 400 decryption_failed."""
    async def scenario(call: Call) -> None:
        compact = jwe_encoder.encrypt_card(stack.jwk)
        status, headers, text = await call("POST", "/v1/tokens",
                                           body={"encrypted_card": _tamper(compact, index)})
        assert status == 400 and problem_code(status, headers, text) == "decryption_failed"
    run_http(stack, scenario)


def _card_case(stack: edge_stack.Stack, name: str) -> str:
    now = int(time.time())
    jwk = stack.jwk
    unknown_brand = "990000000000000"
    cases: dict[str, Callable[[], str]] = {
        "bad_luhn": lambda: jwe_encoder.encrypt_card(jwk, number="4242424242424241"),
        "expired": lambda: jwe_encoder.encrypt_card(jwk, exp_month=1, exp_year=2020),
        "unknown_brand": lambda: jwe_encoder.encrypt_card(
            jwk, number=unknown_brand + luhn_digit(unknown_brand)),
        "missing": lambda: jwe_encoder.encrypt(
            json.dumps({"number": PAN, "iat": now}).encode(), jwk),
        "empty_cvc": lambda: jwe_encoder.encrypt_card(jwk, cvc=""),
        "short_cvc": lambda: jwe_encoder.encrypt_card(jwk, cvc="12"),
        "letters": lambda: jwe_encoder.encrypt_card(jwk, number="4242abcd42424242"),
        "bad_month": lambda: jwe_encoder.encrypt_card(jwk, exp_month=13),
        "old_iat": lambda: jwe_encoder.encrypt_card(jwk, iat=now - 601),
        "future_iat": lambda: jwe_encoder.encrypt_card(jwk, iat=now + 120),
        "not_json": lambda: jwe_encoder.encrypt(b"4242424242424242", jwk),
        "rsa1_5": lambda: jwe_encoder.encrypt(b"{}", jwk, extra_header={"alg": "RSA1_5"}),
        "a128gcm": lambda: jwe_encoder.encrypt(b"{}", jwk, enc="A128GCM"),
        "zip": lambda: jwe_encoder.encrypt(b"{}", jwk, extra_header={"zip": "DEF"}),
        "unknown_kid": lambda: jwe_encoder.encrypt_card(dict(jwk, kid="sw-nope")),
        "four_parts": lambda: jwe_encoder.encrypt_card(jwk).rsplit(".", 1)[0],
        "bad_base64": lambda: "eyJ!." + jwe_encoder.encrypt_card(jwk).split(".", 1)[1],
    }
    return cases[name]()


@pytest.mark.parametrize(("case", "status", "code", "fields"), [
    ("bad_luhn", 422, "incorrect_number", ["number"]),
    ("expired", 422, "expired_card", ["exp_month", "exp_year"]),
    ("unknown_brand", 422, "unsupported_brand", ["number"]),
    ("missing", 422, "missing_fields", ["exp_month", "exp_year", "cvc"]),
    ("empty_cvc", 422, "missing_fields", ["cvc"]),
    ("short_cvc", 422, "invalid_cvc", ["cvc"]),
    ("letters", 422, "invalid_number", ["number"]),
    ("bad_month", 422, "invalid_expiry", ["exp_month", "exp_year"]),
    ("old_iat", 400, "iat_out_of_window", ["iat"]),
    ("future_iat", 400, "iat_out_of_window", ["iat"]),
    ("not_json", 400, "invalid_payload", None),
    ("rsa1_5", 400, "unsupported_algorithm", None),
    ("a128gcm", 400, "unsupported_algorithm", None),
    ("zip", 400, "unsupported_algorithm", None),
    ("unknown_kid", 400, "unknown_key", None),
    ("four_parts", 400, "malformed_jwe", None),
    ("bad_base64", 400, "malformed_jwe", None),
])
def test_each_refusal_has_its_own_code(stack: edge_stack.Stack, case: str, status: int,
                                       code: str, fields: list[str] | None) -> None:
    """Every kind of bad card or JWE is refused with a stable code and a 4xx, naming the
    fields but never their values."""
    async def scenario(call: Call) -> None:
        got, headers, text = await call("POST", "/v1/tokens",
                                        body={"encrypted_card": _card_case(stack, case)})
        assert got == status, text
        assert problem_code(got, headers, text) == code
        if fields is not None:
            assert json.loads(text)["fields"] == fields
        assert "123" not in text.replace(str(got), "")
    run_http(stack, scenario)


def test_a_jwe_is_accepted_once(stack: edge_stack.Stack) -> None:
    """Posting the same JWE twice: the second is 409 replayed_jwe."""
    async def scenario(call: Call) -> None:
        body = token_body(stack)
        assert (await call("POST", "/v1/tokens", body=body))[0] == 200
        status, headers, text = await call("POST", "/v1/tokens", body=body)
        assert status == 409 and problem_code(status, headers, text) == "replayed_jwe"
    run_http(stack, scenario)


def test_a_replay_is_refused_after_a_restart(tmp_path: Path) -> None:
    """The replay record is durable: a new process on the same data dir still refuses it."""
    first = edge_stack.build(tmp_path)
    body = token_body(first)
    run_http(first, lambda call: _expect(call, body, 200))
    first.close()
    second = edge_stack.build(tmp_path)
    try:
        run_http(second, lambda call: _expect(call, body, 409))
    finally:
        second.close()


async def _expect(call: Call, body: dict[str, str], status: int) -> None:
    got, _headers, text = await call("POST", "/v1/tokens", body=body)
    assert got == status, text


def test_a_retired_kid_is_refused(stack: edge_stack.Stack) -> None:
    """After rotation the old kid still works; once retired it is unknown_key."""
    async def scenario(call: Call) -> None:
        old = stack.jwk
        stack.hsm.rotate_jwe_key()
        assert (await call("POST", "/v1/tokens",
                           body={"encrypted_card": jwe_encoder.encrypt_card(old)}))[0] == 200
        stack.hsm.retire_jwe_key(str(old["kid"]))
        status, headers, text = await call(
            "POST", "/v1/tokens", body={"encrypted_card": jwe_encoder.encrypt_card(old)})
        assert status == 400 and problem_code(status, headers, text) == "unknown_key"
    run_http(stack, scenario)


@pytest.mark.parametrize(("key", "content_type", "raw", "status", "code"), [
    (None, "application/json", b"{}", 401, "invalid_publishable_key"),
    ("pk_test_nobody", "application/json", b"{}", 401, "invalid_publishable_key"),
    ("sk_live_secret", "application/json", b"{}", 401, "invalid_publishable_key"),
    ("pk_test_acme", "text/plain", b"{}", 415, "unsupported_media_type"),
    ("pk_test_acme", "application/json", b"{not json", 400, "invalid_json"),
    ("pk_test_acme", "application/json", b'{"encrypted_card": 5}', 400, "invalid_request"),
    ("pk_test_acme", "application/json", b"[]", 400, "invalid_request"),
    ("pk_test_acme", "application/json", b'{"x": "' + b"a" * 20000 + b'"}', 413,
     "payload_too_large"),
])
def test_bad_requests_get_problem_json(stack: edge_stack.Stack, key: str | None,
                                       content_type: str, raw: bytes, status: int,
                                       code: str) -> None:
    """Missing or wrong keys, wrong media type, bad JSON and oversized bodies are typed
    problems."""
    async def scenario(call: Call) -> None:
        got, headers, text = await call("POST", "/v1/tokens", raw=raw, key=key,
                                        content_type=content_type)
        assert got == status, text
        assert problem_code(got, headers, text) == code
    run_http(stack, scenario)


def test_unknown_routes_and_methods_are_problems_too(stack: edge_stack.Stack) -> None:
    """404 and 405 come back as problem+json (405 with Allow)."""
    async def scenario(call: Call) -> None:
        status, headers, text = await call("GET", "/v1/nothing")
        assert status == 404 and problem_code(status, headers, text) == "not_found"
        status, headers, text = await call("GET", "/v1/tokens")
        assert status == 405 and problem_code(status, headers, text) == "method_not_allowed"
        assert "POST" in headers["Allow"]
    run_http(stack, scenario)


def test_health_reports_the_hsm(stack: edge_stack.Stack) -> None:
    """GET /healthz runs the HSM self-test and names the active kid."""
    async def scenario(call: Call) -> None:
        status, _headers, text = await call("GET", "/healthz", key=None)
        body = json.loads(text)
        assert status == 200 and body["ok"] and body["active_kid"] == stack.jwk["kid"]
    run_http(stack, scenario)


def test_the_window_is_configurable(tmp_path: Path) -> None:
    """A stricter policy (60 s back) refuses a card encrypted two minutes ago."""
    strict = edge_stack.build(tmp_path, policy=IntakePolicy(max_age=60, max_skew=5))
    try:
        body = token_body(strict, iat=int(time.time()) - 120)
        async def scenario(call: Call) -> None:
            status, headers, text = await call("POST", "/v1/tokens", body=body)
            assert status == 400 and problem_code(status, headers, text) == "iat_out_of_window"
        run_http(strict, scenario)
    finally:
        strict.close()


def test_the_edge_tokenizes_through_softhsm(tmp_path: Path) -> None:
    """On the PKCS#11 backend the JWKS offers RSA-OAEP, such a JWE tokenizes, and an
    RSA-OAEP-256 one is refused as unsupported (SoftHSM 2.6.1 cannot do it)."""
    from softhsm import make_token

    from hsm_sim.pkcs11 import Pkcs11Hsm

    token = make_token(tmp_path, "edge")
    pkcs11_stack = edge_stack.build(tmp_path, hsm=Pkcs11Hsm(token.module, token.label,
                                                            token.pin))
    try:
        async def scenario(call: Call) -> None:
            status, _headers, text = await call("GET", "/v1/keys", key=None)
            jwk = json.loads(text)["keys"][0]
            assert status == 200 and jwk["alg"] == "RSA-OAEP"
            status, _headers, text = await call(
                "POST", "/v1/tokens", body={"encrypted_card": jwe_encoder.encrypt_card(jwk)})
            assert status == 200, text
            token_value = json.loads(text)["token"]
            card = (await pkcs11_stack.vault.detokenize_for_network("acme", token_value)).card
            assert card.pan == PAN
            status, headers, text = await call("POST", "/v1/tokens", body={
                "encrypted_card": jwe_encoder.encrypt_card(jwk, alg="RSA-OAEP-256")})
            assert status == 400
            assert problem_code(status, headers, text) == "unsupported_algorithm"
        run_http(pkcs11_stack, scenario)
    finally:
        pkcs11_stack.close()


def _respell(part: str) -> str:
    """The same bytes, spelt differently: flip an unused low bit of the last character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = {2: 4, 3: 2}[len(part) % 4]          # bits the last character does not use
    index = alphabet.index(part[-1])
    return part[:-1] + alphabet[index ^ (1 << (unused - 1))]


def test_a_respelt_jwe_is_still_a_replay(stack: edge_stack.Stack) -> None:
    """Re-encoding a part with different unused base64url bits (the same bytes) does not
    get past the replay check."""
    async def scenario(call: Call) -> None:
        compact = jwe_encoder.encrypt_card(stack.jwk)
        parts = compact.split(".")
        index = next(i for i in (4, 2, 1, 3) if len(parts[i]) % 4 in (2, 3))
        respelt = parts.copy()
        respelt[index] = _respell(parts[index])
        assert respelt != parts
        assert (await call("POST", "/v1/tokens", body={"encrypted_card": compact}))[0] == 200
        status, headers, text = await call("POST", "/v1/tokens",
                                           body={"encrypted_card": ".".join(respelt)})
        assert status == 409 and problem_code(status, headers, text) == "replayed_jwe"
    run_http(stack, scenario)
