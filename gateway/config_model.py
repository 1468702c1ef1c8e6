"""The gateway's configuration as data: the frozen dataclasses :mod:`gateway.config`
builds from the TOML file and the environment, their defaults, and the small rules
shared by both (which keys are secret, how a listen address reads). The file's format
and the loading are in :mod:`gateway.config`, which re-exports everything here."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.logging import LEVELS
from gateway.merchants import (
    DEMO,
    Merchant,
    MerchantDirectory,
)
from gateway.pki import Credentials
from hsm_sim.config import HsmConfig

if TYPE_CHECKING:
    from gateway.intake import IntakePolicy

ENV_PREFIX = "PAYGATE_"
CONFIG_ENV = "PAYGATE_CONFIG"
LOG_LEVELS = LEVELS
HSM_BACKENDS = ("software", "pkcs11")
MASK = "********"


class ConfigError(ValueError):
    """The configuration is not valid; the message names the key (never a secret value)."""


def is_secret(key: str) -> bool:
    """Whether a key's value must never be shown: PINs, passwords, secrets, key material."""
    name = key.lower().replace("-", "_")
    words = name.split("_")
    return ("pin" in words or "password" in name or "passphrase" in name or "secret" in name
            or "key_material" in name or "master_key" in name)


def split_listen(text: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:port"`` for IPv6) as (host, port); ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise ValueError("expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not host or number > 65535:
        raise ValueError("expected HOST:PORT with a port up to 65535")
    return host, number


# ------------------------------------------------------------------------- the schema


def tls_files(data_dir: Path, name: str) -> TlsConfig:
    """The dev PKI's files of ``name`` under ``data_dir/pki`` (``paygate dev-certs``)."""
    folder = data_dir / "pki"
    return TlsConfig(cert=folder / f"{name}.crt", key=folder / f"{name}.key",
                     ca=folder / "ca.crt")


@dataclass(frozen=True)
class TlsConfig:
    """PEM files of one mutual-TLS party: certificate, private key, trusted CA."""

    cert: Path
    key: Path
    ca: Path

    def credentials(self) -> Credentials:
        return Credentials(cert=self.cert, key=self.key, ca=self.ca)


class _Listening:
    """``host`` and ``port`` of a ``listen`` address (``HOST:PORT``)."""

    listen: str

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


@dataclass(frozen=True)
class GrpcConfig(_Listening):
    """The gRPC payments API (mutual TLS; the caller is its certificate's CN)."""

    listen: str = "127.0.0.1:50051"
    grace_seconds: float = 10.0
    max_concurrent_rpcs: int = 1000
    tls: TlsConfig = field(default_factory=lambda: tls_files(Path("var"), "gateway-server"))


@dataclass(frozen=True)
class HttpConfig(_Listening):
    """The HTTP edge the iframe SDK talks to."""

    listen: str = "127.0.0.1:8080"
    max_body: int = 16 * 1024


@dataclass(frozen=True)
class NetworkConfig:
    """The card network (netsim) and how the gateway's client talks to it."""

    host: str = "127.0.0.1"
    port: int = 8583
    terminal_id: str = "TERM0001"
    acquirer_id: str = "440001"
    deadline_seconds: float = 2.0
    max_in_flight: int = 256
    connections: int = 1
    stan_reserve: int = 100
    echo_interval_seconds: float = 30.0
    #: Record the gateway's side of the network link to this file ("" = off).
    record_file: str = ""
    tls: TlsConfig = field(default_factory=lambda: tls_files(Path("var"), "gateway"))


@dataclass(frozen=True)
class ReconcilerConfig:
    """How fast the reconciler retries (certification runs want it quick)."""

    interval_seconds: float = 0.2
    backoff_initial_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0
    backoff_jitter: float = 0.5


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``rate`` requests per second on average, ``burst`` at once."""

    rate: float = 100.0
    burst: int = 200


@dataclass(frozen=True)
class IntakeConfig:
    """Freshness window of a card JWE's ``iat``, in seconds."""

    max_age: int = 600
    max_skew: int = 60

    def policy(self) -> IntakePolicy:
        """As :class:`gateway.intake.IntakePolicy`."""
        from gateway.intake import IntakePolicy

        return IntakePolicy(max_age=self.max_age, max_skew=self.max_skew)


@dataclass(frozen=True)
class LoggingConfig:
    """For :func:`gateway.logging.configure_logging`."""

    level: str = "info"
    json: bool = False


@dataclass(frozen=True)
class Identity:
    """A caller (its client certificate's CN) and the merchants it may act for.

    ``merchants`` is as configured: merchant ids, or ``("*",)`` for every merchant.
    ``rate_limit`` is None when the identity uses the default.
    """

    name: str
    merchants: tuple[str, ...] = ()
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class Identities:
    """The identities that may call the gateway, looked up by name."""

    entries: tuple[Identity, ...] = ()
    #: Every configured merchant (what ``"*"`` stands for).
    merchant_ids: frozenset[str] = frozenset()
    default_rate_limit: RateLimit = field(default_factory=RateLimit)

    def get(self, name: str) -> Identity | None:
        return next((i for i in self.entries if i.name == name), None)

    def merchants_for(self, identity: str) -> frozenset[str] | None:
        """The merchant ids ``identity`` may act for (``"*"`` expanded to every configured
        merchant), or None for an unknown identity."""
        entry = self.get(identity)
        if entry is None:
            return None
        if "*" in entry.merchants:
            return self.merchant_ids
        return frozenset(entry.merchants)

    def may_act_for(self, identity: str, merchant_id: str) -> bool:
        allowed = self.merchants_for(identity)
        return allowed is not None and merchant_id in allowed

    def rate_limit_for(self, identity: str) -> RateLimit | None:
        """The identity's own rate limit or the default; None for an unknown identity."""
        entry = self.get(identity)
        if entry is None:
            return None
        return entry.rate_limit or self.default_rate_limit

    def __iter__(self) -> Iterator[Identity]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return any(i.name == name for i in self.entries)


def _demo_merchants() -> tuple[Merchant, ...]:
    return tuple(MerchantDirectory.from_data(DEMO))


def _demo_identities() -> Identities:
    return Identities(entries=(Identity("checkout-service", ("acme", "globex")),),
                      merchant_ids=frozenset(m.id for m in _demo_merchants()))


@dataclass(frozen=True)
class GatewayConfig:
    """The effective configuration (see the module docstring for the file)."""

    data_dir: Path = Path("var")
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    reconciler: ReconcilerConfig = field(default_factory=ReconcilerConfig)
    hsm: HsmConfig = field(default_factory=HsmConfig)
    rate_limit: RateLimit = field(default_factory=RateLimit)
    intake: IntakeConfig = field(default_factory=IntakeConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    merchants: tuple[Merchant, ...] = field(default_factory=_demo_merchants)
    identities: Identities = field(default_factory=_demo_identities)
    #: The TOML file read, if any.
    source: Path | None = field(default=None, compare=False)

    def merchant_directory(self) -> MerchantDirectory:
        return MerchantDirectory(list(self.merchants))

    def merchants_for(self, identity: str) -> frozenset[str] | None:
        """Shorthand for ``self.identities.merchants_for(identity)``."""
        return self.identities.merchants_for(identity)
