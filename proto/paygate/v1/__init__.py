"""Version 1 of the public contract (protobuf package ``paygate.v1``)."""
