"""The ``paygate.v1.Tokens`` servicer: internal services that hold a client-side
encrypted card (a compact JWE from the iframe SDK) turn it into a vault token for a
merchant they may act for. Same intake as the HTTP edge; its refusal codes become
the ``ErrorInfo`` reason (INVALID_ARGUMENT, or ALREADY_EXISTS for a replayed JWE)."""

from __future__ import annotations

import grpc
from paygate.v1 import tokens_pb2, tokens_pb2_grpc

from gateway.api.context import authorize_merchant
from gateway.intake import CardIntake, IntakeError
from gateway.payments.errors import DomainError


class TokensServicer(tokens_pb2_grpc.TokensServicer):
    """gRPC in, card intake out."""

    def __init__(self, intake: CardIntake) -> None:
        self._intake = intake

    async def CreateToken(self, request: tokens_pb2.CreateTokenRequest,
                          context: grpc.aio.ServicerContext) -> tokens_pb2.Token:
        authorize_merchant(request.merchant_id)
        try:
            result = await self._intake.tokenize(request.merchant_id, request.encrypted_card)
        except IntakeError as exc:
            status = "ALREADY_EXISTS" if exc.status == 409 else "INVALID_ARGUMENT"
            raise DomainError(status, exc.code, exc.message,
                              {"fields": ",".join(exc.fields)} if exc.fields else None
                              ) from None
        return tokens_pb2.Token(token=result.token, brand=result.brand, last4=result.last4,
                                exp_month=result.exp_month, exp_year=result.exp_year,
                                created=result.created)
