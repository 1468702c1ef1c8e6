"""The gateway's HTTP edge (aiohttp): the JWKS, card tokenization for the iframe SDK,
health; problem+json errors. ``create_app`` builds it from an intake, an HSM
and the merchant directory; ``gateway.edge.serve`` runs it."""

from gateway.edge.app import MAX_BODY, create_app

__all__ = ["MAX_BODY", "create_app"]
