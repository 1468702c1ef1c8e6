"""paygate's public contract: gRPC stubs generated at build time from ``proto/paygate/``.

Import the generated modules as ``paygate.v1.<name>_pb2`` and
``paygate.v1.<name>_pb2_grpc``.
"""
