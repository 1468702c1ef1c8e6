"""The HTTP edge's card iframe SDK routes (``gateway.edge.sdk``) and the demo checkout
(``gateway.edge.checkout``): headers, policies, refusals, and the merchant backend."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import edge_stack
import grpc_stack

from gateway.edge import sdk
from gateway.jwe import encrypt_compact
from gateway.merchants import MerchantDirectory
from gateway.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
FRAME_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                "img-src 'self' data:; base-uri 'none'; form-action 'none'")
TWO_MERCHANTS = MerchantDirectory.from_data({"merchants": [
    {"id": "shop", "publishable_keys": ["pk_test_shop"],
     "allowed_origins": ["https://shop.example", "https://www.shop.example"]},
    {"id": "other", "publishable_keys": ["pk_test_other"],
     "allowed_origins": ["https://other.example"]},
]})


async def _get(session: aiohttp.ClientSession, url: str,
               **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url, allow_redirects=False, **kwargs) as response:
        return response.status, dict(response.headers), await response.read()


def on_edge(tmp_path: Path,
            check: Callable[[aiohttp.ClientSession, str], Awaitable[None]],
            merchants: MerchantDirectory = TWO_MERCHANTS) -> None:
    """Run ``check(session, base_url)`` against an edge serving ``merchants``."""
    stack = edge_stack.build(tmp_path)
    stack.merchants = merchants

    async def main() -> None:
        async with edge_stack.serve(stack) as base, aiohttp.ClientSession() as session:
            await check(session, base)
    try:
        asyncio.run(main())
    finally:
        stack.close()


def test_frame_policy_is_exact_and_its_ancestor_is_the_merchants_parent(tmp_path: Path) -> None:
    """frame.html carries the exact strict CSP with frame-ancestors set to the requested
    parent, which must be one of that key's merchant's allowed origins."""
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        for key, parent in (("pk_test_shop", "https://shop.example"),
                            ("pk_test_shop", "https://www.shop.example"),
                            ("pk_test_other", "https://other.example")):
            status, headers, body = await _get(session, f"{base}/sdk/v1/frame.html",
                                               params={"key": key, "parent": parent})
            assert status == 200, body
            assert headers["Content-Security-Policy"] == \
                f"{FRAME_POLICY}; frame-ancestors {parent}"
            assert headers["Content-Type"] == "text/html; charset=utf-8"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert headers["Cache-Control"] == "no-store"
            assert headers["Cross-Origin-Resource-Policy"] == "same-origin"
            assert "payment=()" in headers["Permissions-Policy"]
            assert b'<script type="module" src="frame.js"></script>' in body
        # One merchant's key does not open the frame for another merchant's origin.
        status, _, body = await _get(session, f"{base}/sdk/v1/frame.html",
                                     params={"key": "pk_test_other",
                                             "parent": "https://shop.example"})
        assert status == 403 and json.loads(body)["code"] == "origin_not_allowed"
    on_edge(tmp_path, check)


def test_unknown_key_or_parent_is_refused_and_the_refusal_cannot_be_framed(
        tmp_path: Path) -> None:
    """A missing or unknown key is 400, a parent that is not exactly an allowed origin is
    403, both problem+json with frame-ancestors 'none' and X-Frame-Options DENY."""
    cases = [
        ({"parent": "https://shop.example"}, 400, "invalid_publishable_key", "key"),
        ({"key": "pk_test_nobody", "parent": "https://shop.example"}, 400,
         "invalid_publishable_key", "key"),
        ({"key": "pk_test_shop"}, 403, "origin_not_allowed", "parent"),
        ({"key": "pk_test_shop", "parent": "https://evil.example"}, 403, "origin_not_allowed",
         "parent"),
        ({"key": "pk_test_shop", "parent": "https://shop.example/"}, 403, "origin_not_allowed",
         "parent"),
        ({"key": "pk_test_shop", "parent": "http://shop.example"}, 403, "origin_not_allowed",
         "parent"),
        ({"key": "pk_test_shop", "parent": "https://shop.example.evil.example"}, 403,
         "origin_not_allowed", "parent"),
        ({"key": "pk_test_shop", "parent": "null"}, 403, "origin_not_allowed", "parent"),
    ]

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        for params, want_status, code, field in cases:
            status, headers, body = await _get(session, f"{base}/sdk/v1/frame.html",
                                               params=params)
            assert status == want_status, params
            assert headers["Content-Type"] == "application/problem+json", params
            problem = json.loads(body)
            assert (problem["code"], problem["fields"]) == (code, [field]), params
            assert headers["Content-Security-Policy"] == \
                "default-src 'none'; frame-ancestors 'none'"
            assert headers["X-Frame-Options"] == "DENY"
            assert b"<script" not in body
    on_edge(tmp_path, check)


def test_scripts_and_styles_have_their_content_types_and_cross_origin_rules(
        tmp_path: Path) -> None:
    """paygate.js is JavaScript any origin may load; the frame's own files are JavaScript
    or CSS for the gateway's origin only; all are nosniff; other names are 404."""
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, headers, body = await _get(session, f"{base}/sdk/v1/paygate.js")
        assert status == 200
        assert headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert headers["Cross-Origin-Resource-Policy"] == "cross-origin"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert b"root.Paygate = Paygate" in body
        for name, content_type in (("frame.js", "text/javascript"), ("card.js", "text/javascript"),
                                   ("jwe.js", "text/javascript"), ("frame.css", "text/css")):
            status, headers, _ = await _get(session, f"{base}/sdk/v1/{name}")
            assert status == 200, name
            assert headers["Content-Type"] == f"{content_type}; charset=utf-8", name
            assert headers["Cross-Origin-Resource-Policy"] == "same-origin", name
            assert headers["X-Content-Type-Options"] == "nosniff", name
            assert "Access-Control-Allow-Origin" not in headers, name
        for name in ("index.js", "package.json", "..%2Fapp.py", "frame.htm"):
            status, headers, _ = await _get(session, f"{base}/sdk/v1/{name}")
            assert status == 404, name
            assert headers["Content-Type"] == "application/problem+json", name
    on_edge(tmp_path, check)


class _Inline(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, styles and handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script":
            self.scripts.append(names)
            self._in_script = True
        if tag == "style":
            self.inline.append("<style>")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"{tag} {name}")
            if value and value.strip().lower().startswith("javascript:"):
                self.inline.append(f"{tag} {name}=javascript:")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("inline script")


def test_frame_page_has_no_inline_code_and_accessible_fields() -> None:
    """frame.html (as installed) loads one same-origin module script and has no inline
    script, style or handler; each field has a label, input mode, autocomplete and an
    aria-described error region."""
    text = (sdk.ASSETS_DIR / "frame.html").read_text("utf-8")
    parser = _Inline()
    parser.feed(text)
    assert parser.inline == []
    assert parser.scripts == [{"type": "module", "src": "frame.js"}]
    for field, autocomplete in (("number", "cc-number"), ("expiry", "cc-exp"), ("cvc", "cc-csc")):
        assert f'<label for="{field}">' in text
        assert f'id="{field}" ' in text and f'autocomplete="{autocomplete}"' in text
        assert f'aria-describedby="{field}-error"' in text
        assert f'<p id="{field}-error" class="error" aria-live="polite"' in text
    assert text.count('inputmode="numeric"') == 3


def test_installed_sdk_files_are_the_source_tree() -> None:
    """The package serves byte-for-byte the files of sdk/js/src (a stale build fails)."""
    assets = sdk.load_assets()
    assert set(assets) == set(sdk.FILES)
    for name, asset in assets.items():
        assert asset.body == (ROOT / "sdk" / "js" / "src" / name).read_bytes(), name


def _token(http: str, jwk: dict[str, Any], pan: str) -> Awaitable[str]:
    async def make() -> str:
        card = json.dumps({"number": pan, "exp_month": 12, "exp_year": 2034, "cvc": "123",
                           "iat": int(time.time())}).encode()
        async with aiohttp.ClientSession() as session, session.post(
                http + "/v1/tokens", json={"encrypted_card": encrypt_compact(card, jwk)},
                headers={"Authorization": "Bearer pk_test_acme"}) as response:
            assert response.status == 200
            return str((await response.json())["token"])
    return make()


def on_checkout(tmp_path: Path,
                check: Callable[[Stack, aiohttp.ClientSession], Awaitable[None]]) -> None:
    """Run ``check`` against the whole stack with its demo checkout."""
    config = grpc_stack.stack_config(tmp_path)

    async def main() -> None:
        async with Stack(config, demo_checkout=True) as stack, \
                aiohttp.ClientSession() as session:
            await check(stack, session)
    asyncio.run(main())


def test_checkout_page_is_served_from_another_origin_than_the_frame(tmp_path: Path) -> None:
    """The checkout page lives on localhost:PORT (127.0.0.1 redirects there), loads the
    SDK from 127.0.0.1:PORT under its own strict CSP, and that page origin may frame the
    card frame for the demo merchant."""
    async def check(stack: Stack, session: aiohttp.ClientSession) -> None:
        assert stack.info is not None and stack.checkout_url is not None
        port = stack.info.http.rsplit(":", 1)[1]
        gateway, page = f"http://127.0.0.1:{port}", f"http://localhost:{port}"
        assert stack.info.http == gateway
        assert stack.checkout_url == f"{page}/demo/checkout"
        status, headers, _ = await _get(session, f"{gateway}/demo/checkout")
        assert status == 303 and headers["Location"] == stack.checkout_url
        status, headers, body = await _get(session, stack.checkout_url)
        assert status == 200
        assert headers["Content-Security-Policy"] == (
            f"default-src 'none'; script-src 'self' {gateway}; style-src 'self'; "
            f"connect-src 'self'; frame-src {gateway}; img-src 'self' data:; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")
        assert f'<script src="{gateway}/sdk/v1/paygate.js"></script>'.encode() in body
        assert b'data-publishable-key="pk_test_acme"' in body
        status, headers, _ = await _get(session, f"{gateway}/sdk/v1/frame.html",
                                        params={"key": "pk_test_acme", "parent": page})
        assert status == 200
        assert headers["Content-Security-Policy"].endswith(f"frame-ancestors {page}")
    on_checkout(tmp_path, check)


def test_checkout_pay_refusals_are_problems(tmp_path: Path) -> None:
    """The demo merchant backend refuses a foreign Origin (403), a non-JSON body (415),
    bad JSON (400), a missing or malformed token (400) and an unknown token (422, with
    the gRPC reason), all as problem+json."""
    async def check(stack: Stack, session: aiohttp.ClientSession) -> None:
        assert stack.checkout_url is not None
        url = stack.checkout_url + "/pay"
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"json": {"token": "4111111111111111"}, "headers": {"Origin": "http://evil.test"}},
             403, "origin_not_allowed"),
            ({"data": "token=1"}, 415, "unsupported_media_type"),
            ({"data": "{", "headers": {"Content-Type": "application/json"}}, 400,
             "invalid_json"),
            ({"json": {}}, 400, "invalid_request"),
            ({"json": {"token": 4242424242424242}}, 400, "invalid_request"),
            ({"json": {"token": "42 42"}}, 400, "invalid_request"),
            ({"json": ["token"]}, 400, "invalid_request"),
            ({"json": {"token": "4111111111111111"}}, 422, "payment_refused"),
        ]
        for kwargs, want_status, code in cases:
            async with session.post(url, **kwargs) as response:
                body = await response.json(content_type=None)
                assert response.status == want_status, (kwargs, body)
                assert response.headers["Content-Type"] == "application/problem+json"
                assert body["code"] == code, (kwargs, body)
                assert "4111111111111111" not in json.dumps(body)
                if code == "payment_refused":
                    assert body["reason"] and body["reason"] in body["detail"]
    on_checkout(tmp_path, check)


def test_checkout_pay_creates_and_confirms_the_intent_over_grpc(tmp_path: Path) -> None:
    """With a token of the approving card the intent succeeds; with the declining card it
    comes back requires_payment_method with the decline."""
    async def check(stack: Stack, session: aiohttp.ClientSession) -> None:
        assert stack.info is not None and stack.checkout_url is not None
        async with session.get(stack.info.http + "/v1/keys") as response:
            jwk = (await response.json(content_type=None))["keys"][0]
        url = stack.checkout_url + "/pay"
        origin = stack.checkout_url.removesuffix("/demo/checkout")
        token = await _token(stack.info.http, jwk, "4242424242424242")
        async with session.post(url, json={"token": token},
                                headers={"Origin": origin}) as response:
            paid = await response.json()
        assert response.status == 200, paid
        assert (paid["status"], paid["amount"], paid["currency"], paid["error"]) == \
            ("succeeded", 1999, "eur", None)
        assert paid["intent"].startswith("pi_")
        token = await _token(stack.info.http, jwk, "4000000000000002")
        async with session.post(url, json={"token": token}) as response:
            declined = await response.json()
        assert response.status == 200, declined
        assert declined["status"] == "requires_payment_method"
        assert declined["error"]["code"] == "card_declined"
        assert declined["error"]["decline_code"] == "generic_decline"
        assert declined["error"]["network_response_code"] == "05"
    on_checkout(tmp_path, check)
