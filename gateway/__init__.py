"""The gateway: gRPC Payments service, payment state machine, store, network
client, card vault, HTTP edge for the iframe SDK, auth and logging.

For now it owns the ``paygate`` command line (``gateway.cli``); the service
itself arrives with later issues.
"""

__version__ = "0.1.0"
