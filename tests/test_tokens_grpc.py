"""The internal Tokens service over mutual TLS: an encrypted card becomes a token for a
merchant the caller may act for; the intake's refusals keep their codes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import jwe_encoder
import pytest
from paygate.v1 import tokens_pb2, tokens_pb2_grpc

from gateway.api.server import client_channel
from gateway.config import load_config
from gateway.payments.convert import error_info_from
from gateway.stack import Stack


def test_create_token_and_its_refusals(tmp_path: Path) -> None:
    """CreateToken tokenizes a JWE; the same JWE again is ALREADY_EXISTS replayed_jwe; a
    mistyped number is INVALID_ARGUMENT incorrect_number; an unknown merchant is
    PERMISSION_DENIED."""
    config = load_config(None, {"PAYGATE_DATA_DIR": str(tmp_path),
                                "PAYGATE_GRPC_LISTEN": "127.0.0.1:0",
                                "PAYGATE_HTTP_LISTEN": "127.0.0.1:0",
                                "PAYGATE_NETWORK_PORT": "0"})

    async def main() -> None:
        async with Stack(config) as stack:
            assert stack.info is not None and stack.vault is not None
            jwk = await _jwk(stack)
            async with client_channel(stack.info.grpc, stack.info.client_credentials()) as ch:
                stub = tokens_pb2_grpc.TokensStub(ch)  # type: ignore[no-untyped-call]
                jwe = jwe_encoder.encrypt_card(jwk)
                token = await stub.CreateToken(tokens_pb2.CreateTokenRequest(
                    merchant_id="acme", encrypted_card=jwe))
                assert (token.brand, token.last4, token.created) == ("visa", "4242", True)
                card = (await stack.vault.detokenize_for_network("acme", token.token)).card
                assert card.pan == "4242424242424242"
                for merchant, encrypted, code, reason in (
                        ("acme", jwe, grpc.StatusCode.ALREADY_EXISTS, "replayed_jwe"),
                        ("acme", jwe_encoder.encrypt_card(jwk, number="4242424242424241"),
                         grpc.StatusCode.INVALID_ARGUMENT, "incorrect_number"),
                        ("nobody", jwe_encoder.encrypt_card(jwk),
                         grpc.StatusCode.PERMISSION_DENIED, "merchant_forbidden")):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.CreateToken(tokens_pb2.CreateTokenRequest(
                            merchant_id=merchant, encrypted_card=encrypted))
                    assert info.value.code() == code
                    detail = error_info_from(info.value)
                    assert detail is not None and detail.reason == reason
                    assert "4242424242424241" not in (info.value.details() or "")

    asyncio.run(main())


async def _jwk(stack: Stack) -> dict[str, object]:
    import aiohttp
    assert stack.info is not None
    async with aiohttp.ClientSession() as http, http.get(stack.info.http + "/v1/keys") as r:
        key: dict[str, object] = (await r.json(content_type=None))["keys"][0]
        return key
