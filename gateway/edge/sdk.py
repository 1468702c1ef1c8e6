"""The card iframe SDK as the HTTP edge serves it (``sdk/js/src`` in the repository).

* ``GET /sdk/v1/paygate.js``: the merchant-page script; loadable from any origin
  (``Access-Control-Allow-Origin: *``, ``Cross-Origin-Resource-Policy: cross-origin``).
* ``GET /sdk/v1/frame.html?key=<publishable key>&parent=<origin>``: the card frame.
  Served only when ``key`` is a merchant's publishable key and ``parent`` is exactly
  one of that merchant's ``allowed_origins``; its Content-Security-Policy allows no
  inline code, talks only to this origin, and has ``frame-ancestors`` set to that
  ``parent`` alone (one of the merchant's allowed origins: the tightest list that
  still lets the frame work, since the frame posts its messages to that origin
  only). A refusal is problem+json that may not be framed at all.
* ``GET /sdk/v1/{frame.js,frame.css,card.js,jwe.js}``: the frame's code, for the
  frame's own origin (``Cross-Origin-Resource-Policy: same-origin``).

The files are package data: ``setup.py`` copies ``sdk/js/src`` into
``gateway/edge/sdk_assets`` of the installed package at build time, so the
installed ``paygate`` serves exactly what the build saw (``tests/test_sdk_edge.py``
checks the installed copy equals the source tree). They are read once, at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from gateway.edge.problems import problem
from gateway.merchants import Merchant, MerchantDirectory

ASSETS_DIR: Final = Path(__file__).resolve().parent / "sdk_assets"
PREFIX: Final = "/sdk/v1/"
#: File name -> content type, for everything the edge serves under ``/sdk/v1/``.
FILES: Final = {
    "paygate.js": "text/javascript",
    "frame.html": "text/html",
    "frame.js": "text/javascript",
    "frame.css": "text/css",
    "card.js": "text/javascript",
    "jwe.js": "text/javascript",
}
#: The frame's policy without ``frame-ancestors`` (appended per request).
FRAME_CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                    "form-action 'none'")
#: Browser features the frame never needs.
PERMISSIONS_POLICY: Final = ("camera=(), microphone=(), geolocation=(), payment=(), usb=(), "
                             "serial=(), bluetooth=(), display-capture=()")
ASSET_CACHE: Final = "public, max-age=300"

SDK_FILES: Final = web.AppKey("sdk_files", dict)


class AssetsMissing(RuntimeError):
    """The installed package has no SDK files (a build without ``sdk/js/src``)."""


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


def load_assets(folder: Path = ASSETS_DIR) -> dict[str, Asset]:
    """Every file of :data:`FILES` from ``folder``; :class:`AssetsMissing` if one is absent."""
    assets: dict[str, Asset] = {}
    for name, content_type in FILES.items():
        try:
            assets[name] = Asset((folder / name).read_bytes(), content_type)
        except OSError:
            raise AssetsMissing(f"SDK file {name} is missing from {folder}; rebuild "
                                "the package (make build)") from None
    return assets


def frame_csp(parent: str) -> str:
    """The frame's Content-Security-Policy when embedded by ``parent``."""
    return f"{FRAME_CSP}; frame-ancestors {parent}"


def _unframeable(response: web.Response) -> web.Response:
    response.headers["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def frame_refusal(merchant: Merchant | None, parent: str) -> web.Response | None:
    """Why the frame may not be served for this key and parent, or None if it may."""
    if merchant is None:
        return _unframeable(problem(400, "invalid_publishable_key",
                                    "the frame needs ?key=<a valid publishable key>", ("key",)))
    if not parent or parent not in merchant.allowed_origins:
        return _unframeable(problem(
            403, "origin_not_allowed",
            "the parent origin is not one of the merchant's allowed origins", ("parent",)))
    return None


def _asset_response(asset: Asset, *, cache: str) -> web.Response:
    response = web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8")
    response.headers["Cache-Control"] = cache
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def frame_page(request: web.Request) -> web.Response:
    """The card frame, for a known publishable key and one of its allowed parents."""
    from gateway.edge.app import MERCHANTS

    directory: MerchantDirectory = request.app[MERCHANTS]
    key = request.query.get("key", "")
    parent = request.query.get("parent", "")
    merchant = directory.by_publishable_key(key) if key else None
    refusal = frame_refusal(merchant, parent)
    if refusal is not None:
        return refusal
    response = _asset_response(request.app[SDK_FILES]["frame.html"], cache="no-store")
    response.headers["Content-Security-Policy"] = frame_csp(parent)
    response.headers["Permissions-Policy"] = PERMISSIONS_POLICY
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    return response


async def script(request: web.Request) -> web.Response:
    """``paygate.js``: embeddable by any merchant page."""
    response = _asset_response(request.app[SDK_FILES]["paygate.js"], cache=ASSET_CACHE)
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


async def frame_asset(request: web.Request) -> web.Response:
    """The frame's own code and style: for the gateway's origin only."""
    name = request.match_info["name"]
    if name not in FILES or name in ("frame.html", "paygate.js"):
        raise web.HTTPNotFound()
    response = _asset_response(request.app[SDK_FILES][name], cache=ASSET_CACHE)
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    return response


def add_sdk_routes(app: web.Application, assets: dict[str, Asset] | None = None) -> None:
    """Register the SDK routes on the edge (files loaded now, once)."""
    app[SDK_FILES] = assets if assets is not None else load_assets()
    app.router.add_get(PREFIX + "paygate.js", script)
    app.router.add_get(PREFIX + "frame.html", frame_page)
    app.router.add_get(PREFIX + "{name}", frame_asset)
