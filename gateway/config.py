"""The gateway's configuration: one TOML file, environment overrides, embedded defaults.

:func:`load_config` layers, lowest first:

1. the embedded defaults (no file is needed: loopback addresses, the dev certificates
   ``paygate dev-certs`` writes under ``DATA_DIR/pki``, the two demo merchants of
   :data:`gateway.merchants.DEMO` and the ``checkout-service`` identity allowed for both);
2. the TOML file given as ``path``, else named by ``PAYGATE_CONFIG`` (if set);
3. ``PAYGATE_<SECTION>_<KEY>`` environment variables for scalar keys (``PAYGATE_DATA_DIR``,
   ``PAYGATE_GRPC_LISTEN``, ``PAYGATE_GRPC_TLS_CERT``, ``PAYGATE_NETWORK_DEADLINE_SECONDS``,
   ...), parsed as the key's type (int, float, bool, str or path). The HSM's older names
   ``PAYGATE_HSM``, ``PAYGATE_PKCS11_MODULE``, ``PAYGATE_PKCS11_TOKEN`` and
   ``PAYGATE_PKCS11_PIN`` are honoured too (below ``PAYGATE_HSM_BACKEND`` and friends).

Paths default to places under ``data_dir`` (so ``PAYGATE_DATA_DIR=/srv/paygate`` moves
them all) unless set explicitly; relative paths are relative to the working directory.
``[[merchants]]`` and ``[[identities]]`` in a file replace the embedded lists (a file with
merchants but no identities has no identities: nobody may call). An unknown key, a value
of the wrong type or out of range raises :class:`ConfigError` naming the key; the value is
never echoed when the key is a secret (PINs, passwords, key material).

The file, in full (every key optional)::

    data_dir = "var"

    [grpc]
    listen = "127.0.0.1:50051"
    grace_seconds = 10.0
    max_concurrent_rpcs = 1000
    tls = { cert = "var/pki/gateway-server.crt", key = "var/pki/gateway-server.key",
            ca = "var/pki/ca.crt" }                 # the CA client certificates chain to

    [http]
    listen = "127.0.0.1:8080"
    max_body = 16384

    [network]                                       # the card network (netsim)
    host = "127.0.0.1"
    port = 8583
    terminal_id = "TERM0001"                        # field 41, 8 characters
    acquirer_id = "440001"                          # field 32, 1 to 11 digits
    deadline_seconds = 2.0
    max_in_flight = 256
    connections = 1
    stan_reserve = 100                              # STANs made durable per commit
    echo_interval_seconds = 30.0                    # idle time before an echo test (0800/301)
    record_file = ""                                # if set: record every frame (JSON lines,
                                                    # netsim/certify/README.md), card data masked
    tls = { cert = "var/pki/gateway.crt", key = "var/pki/gateway.key", ca = "var/pki/ca.crt" }

    [reconciler]                                    # resolving unknown attempts
    interval_seconds = 0.2                          # between passes while nothing is due
    backoff_initial_seconds = 0.5                   # first retry of an unresolved entry,
    backoff_cap_seconds = 30.0                      # doubling up to the cap,
    backoff_jitter = 0.5                            # of which this fraction is random

    [hsm]                                           # hsm_sim.config.HsmConfig
    backend = "software"                            # or "pkcs11"
    directory = "var/hsm"
    pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"
    token_label = "paygate"
    pin = ""                                        # secret; better PAYGATE_HSM_PIN

    [rate_limit]                                    # identities without their own
    rate = 100.0                                    # requests per second
    burst = 200

    [intake]
    max_age = 600                                   # seconds an iat may lie in the past
    max_skew = 60                                   # ... and in the future

    [logging]
    level = "info"
    json = false

    [[merchants]]
    id = "acme"
    name = "ACME Books"                             # default: the id
    publishable_keys = ["pk_test_acme"]
    allowed_origins = ["http://localhost:8080"]
    card_acceptor_id = "ACME00000000001"            # field 42, <= 15; default: ID upper-cased
    mcc = "5942"                                    # field 18; default "5999"

    [[identities]]
    name = "checkout-service"                       # the client certificate's common name
    merchants = ["acme"]                            # or ["*"]: every merchant
    rate_limit = { rate = 50.0, burst = 100 }       # default: [rate_limit]
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.merchants import (
    DEFAULT_MCC,
    Merchant,
    MerchantConfigError,
)
from hsm_sim.config import HsmConfig

if TYPE_CHECKING:
    pass
from gateway.config_model import (
    CONFIG_ENV,
    ENV_PREFIX,
    HSM_BACKENDS,
    LOG_LEVELS,
    MASK,
    ConfigError,
    GatewayConfig,
    GrpcConfig,
    HttpConfig,
    Identities,
    Identity,
    IntakeConfig,
    LoggingConfig,
    NetworkConfig,
    RateLimit,
    ReconcilerConfig,
    TlsConfig,
    is_secret,
    split_listen,
    tls_files,
)

__all__ = [
    "ConfigError",
    "GatewayConfig",
    "GrpcConfig",
    "HttpConfig",
    "Identities",
    "Identity",
    "IntakeConfig",
    "LoggingConfig",
    "NetworkConfig",
    "RateLimit",
    "ReconcilerConfig",
    "TlsConfig",
    "is_secret",
    "load_config",
    "render_config",
    "split_listen",
]

#: The sections of scalar keys (tables in the file), by name.
_SECTIONS: dict[str, type[Any]] = {
    "grpc": GrpcConfig, "http": HttpConfig, "network": NetworkConfig,
    "reconciler": ReconcilerConfig, "hsm": HsmConfig,
    "rate_limit": RateLimit, "intake": IntakeConfig, "logging": LoggingConfig,
}
#: Older environment names of the HSM's keys (see hsm_sim.config), weaker than the new ones.
_LEGACY_ENV: dict[str, tuple[str, ...]] = {
    "PAYGATE_HSM": ("hsm", "backend"),
    "PAYGATE_PKCS11_MODULE": ("hsm", "pkcs11_module"),
    "PAYGATE_PKCS11_TOKEN": ("hsm", "token_label"),
    "PAYGATE_PKCS11_PIN": ("hsm", "pin"),
}
#: Sections whose every PAYGATE_<SECTION>_* variable must be a known key (hsm is not one:
#: PAYGATE_HSM_MASTER_KEY belongs to the software HSM).
_STRICT_ENV_SECTIONS = ("grpc", "http", "network", "reconciler", "rate_limit", "intake",
                        "logging")
_MERCHANT_KEYS = ("id", "name", "publishable_keys", "allowed_origins", "card_acceptor_id", "mcc")
_IDENTITY_KEYS = ("name", "merchants", "rate_limit")


def _scalar_keys(cls: type[Any], prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...],
                                                                         Any]]:
    """(key path, type) of every scalar key below a section, nested tables included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _scalar_keys(typing.cast(type[Any], tp), (*prefix, f.name))
        else:
            yield (*prefix, f.name), tp


def _env_keys() -> dict[str, tuple[tuple[str, ...], Any]]:
    keys: dict[str, tuple[tuple[str, ...], Any]] = {"PAYGATE_DATA_DIR": (("data_dir",), Path)}
    for section, cls in _SECTIONS.items():
        for path, tp in _scalar_keys(cls, (section,)):
            keys[ENV_PREFIX + "_".join(path).upper()] = (path, tp)
    return keys


# ------------------------------------------------------------------------- conversion


@dataclass(frozen=True)
class _EnvText:
    """A value from an environment variable: text, parsed as the key's type."""

    name: str
    text: str


def _where(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _fail(path: tuple[str | int, ...], value: Any, expected: str) -> ConfigError:
    key = str(next((p for p in reversed(path) if isinstance(p, str)), ""))
    if isinstance(value, _EnvText):
        where = f"{value.name} ({_where(path)})"
        shown = "" if is_secret(key) else f", got {value.text[:40]!r}"
    else:
        where = _where(path)
        shown = "" if is_secret(key) else f", got {_short(value)}"
    return ConfigError(f"{where}: expected {expected}{shown}")


def _short(value: Any) -> str:
    text = repr(value)
    return f"{text[:40]}..." if len(text) > 43 else text


def _scalar(tp: Any, value: Any, path: tuple[str | int, ...]) -> Any:
    if isinstance(value, _EnvText):
        return _parse_env(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(path, value, "true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(path, value, "an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _fail(path, value, "a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(path, value, "a string")
    if tp is Path:
        if isinstance(value, str) and value:
            return Path(value)
        raise _fail(path, value, "a path (a non-empty string)")
    raise TypeError(f"unsupported configuration type {tp!r}")  # pragma: no cover


def _parse_env(tp: Any, value: _EnvText, path: tuple[str | int, ...]) -> Any:
    text = value.text.strip()
    if tp is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise _fail(path, value, "true or false")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise _fail(path, value, "an integer") from None
    if tp is float:
        try:
            number = float(text)
        except ValueError:
            raise _fail(path, value, "a number") from None
        if not math.isfinite(number):
            raise _fail(path, value, "a finite number")
        return number
    if tp is Path:
        if not text:
            raise _fail(path, value, "a path (a non-empty string)")
        return Path(value.text)
    return value.text


def _table(value: Any, path: tuple[str | int, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, value, "a table")
    return value


def _string_list(value: Any, path: tuple[str | int, ...]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, value, "a list of strings")
    return tuple(value)


def _unknown(table: Mapping[str, Any], known: typing.Iterable[str],
             path: tuple[str | int, ...]) -> None:
    extra = sorted(set(table) - set(known))
    if extra:
        raise ConfigError(f"unknown key {_where((*path, extra[0]))}")


def _section(cls: type[Any], table: Mapping[str, Any], base: Any,
             path: tuple[str | int, ...]) -> Any:
    """``table`` as a ``cls``: keys it lacks keep their value in ``base``."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    _unknown(table, names, path)
    values: dict[str, Any] = {}
    for name in names:
        tp = hints[name]
        if name not in table:
            values[name] = getattr(base, name)
        elif dataclasses.is_dataclass(tp):
            values[name] = _section(typing.cast(type[Any], tp),
                                    _table(table[name], (*path, name)),
                                    getattr(base, name), (*path, name))
        else:
            values[name] = _scalar(tp, table[name], (*path, name))
    return cls(**values)


def _merchant(value: Any, path: tuple[str | int, ...]) -> Merchant:
    table = _table(value, path)
    _unknown(table, _MERCHANT_KEYS, path)
    if "id" not in table:
        raise ConfigError(f"{_where(path)}: id is required")
    merchant_id = _scalar(str, table["id"], (*path, "id"))
    if not merchant_id:
        raise _fail((*path, "id"), merchant_id, "a non-empty string")
    try:
        return Merchant(
            id=merchant_id,
            name=_scalar(str, table.get("name", merchant_id), (*path, "name")),
            publishable_keys=frozenset(_string_list(table.get("publishable_keys", []),
                                                    (*path, "publishable_keys"))),
            allowed_origins=_string_list(table.get("allowed_origins", []),
                                         (*path, "allowed_origins")),
            card_acceptor_id=_scalar(str, table.get("card_acceptor_id", ""),
                                     (*path, "card_acceptor_id")),
            mcc=_scalar(str, table.get("mcc", DEFAULT_MCC), (*path, "mcc")))
    except MerchantConfigError as exc:
        raise ConfigError(f"{_where(path)}: {exc}") from None


def _identity(value: Any, path: tuple[str | int, ...], default_rate: RateLimit) -> Identity:
    table = _table(value, path)
    _unknown(table, _IDENTITY_KEYS, path)
    if "name" not in table:
        raise ConfigError(f"{_where(path)}: name is required")
    name = _scalar(str, table["name"], (*path, "name"))
    if not name:
        raise _fail((*path, "name"), name, "a non-empty string")
    merchants = _string_list(table.get("merchants", []), (*path, "merchants"))
    rate = None
    if "rate_limit" in table:
        rate = _section(RateLimit, _table(table["rate_limit"], (*path, "rate_limit")),
                        default_rate, (*path, "rate_limit"))
        _check_rate(rate, (*path, "rate_limit"))
    return Identity(name=name, merchants=merchants, rate_limit=rate)


# ------------------------------------------------------------------------- checks


def _require(ok: bool, path: tuple[str | int, ...], value: Any, expected: str) -> None:
    if not ok:
        raise _fail(path, value, expected)


def _check_listen(text: str, path: tuple[str | int, ...]) -> None:
    try:
        split_listen(text)
    except ValueError:
        raise _fail(path, text, "HOST:PORT") from None


def _check_rate(rate: RateLimit, path: tuple[str | int, ...]) -> None:
    _require(rate.rate > 0, (*path, "rate"), rate.rate, "a number > 0")
    _require(rate.burst >= 1, (*path, "burst"), rate.burst, "an integer >= 1")


def _check(config: GatewayConfig) -> None:
    _check_listen(config.grpc.listen, ("grpc", "listen"))
    _require(config.grpc.grace_seconds >= 0, ("grpc", "grace_seconds"),
             config.grpc.grace_seconds, "a number >= 0")
    _require(config.grpc.max_concurrent_rpcs >= 1, ("grpc", "max_concurrent_rpcs"),
             config.grpc.max_concurrent_rpcs, "an integer >= 1")
    _check_listen(config.http.listen, ("http", "listen"))
    _require(config.http.max_body >= 1, ("http", "max_body"), config.http.max_body,
             "an integer >= 1")
    net = config.network
    _require(bool(net.host), ("network", "host"), net.host, "a host name or address")
    # 0: any free port (for the embedded netsim of `paygate up`, which then connects to it).
    _require(0 <= net.port <= 65535, ("network", "port"), net.port, "a port (0 to 65535)")
    _require(len(net.terminal_id) == 8 and net.terminal_id.isascii()
             and net.terminal_id.isprintable(), ("network", "terminal_id"), net.terminal_id,
             "8 printable ASCII characters (field 41)")
    _require(1 <= len(net.acquirer_id) <= 11 and net.acquirer_id.isascii()
             and net.acquirer_id.isdigit(), ("network", "acquirer_id"), net.acquirer_id,
             "1 to 11 digits (field 32)")
    _require(net.deadline_seconds > 0, ("network", "deadline_seconds"), net.deadline_seconds,
             "a number > 0")
    _require(net.max_in_flight >= 1, ("network", "max_in_flight"), net.max_in_flight,
             "an integer >= 1")
    _require(net.connections >= 1, ("network", "connections"), net.connections,
             "an integer >= 1")
    _require(1 <= net.stan_reserve <= 10_000, ("network", "stan_reserve"), net.stan_reserve,
             "an integer in 1..10000")
    _require(net.echo_interval_seconds > 0, ("network", "echo_interval_seconds"),
             net.echo_interval_seconds, "a number > 0")
    rec = config.reconciler
    _require(rec.interval_seconds > 0, ("reconciler", "interval_seconds"),
             rec.interval_seconds, "a number > 0")
    _require(0 < rec.backoff_initial_seconds <= rec.backoff_cap_seconds,
             ("reconciler", "backoff_initial_seconds"), rec.backoff_initial_seconds,
             "a number > 0 and <= backoff_cap_seconds")
    _require(0 <= rec.backoff_jitter <= 1, ("reconciler", "backoff_jitter"),
             rec.backoff_jitter, "a number from 0 to 1")
    _require(config.hsm.backend in HSM_BACKENDS, ("hsm", "backend"), config.hsm.backend,
             " or ".join(HSM_BACKENDS))
    _check_rate(config.rate_limit, ("rate_limit",))
    _require(config.intake.max_age >= 1, ("intake", "max_age"), config.intake.max_age,
             "an integer >= 1")
    _require(config.intake.max_skew >= 0, ("intake", "max_skew"), config.intake.max_skew,
             "an integer >= 0")
    _require(config.logging.level in LOG_LEVELS, ("logging", "level"), config.logging.level,
             "one of " + ", ".join(LOG_LEVELS))
    try:
        config.merchant_directory()
    except MerchantConfigError as exc:
        raise ConfigError(f"merchants: {exc}") from None
    known = {m.id for m in config.merchants}
    seen: set[str] = set()
    for index, identity in enumerate(config.identities):
        path: tuple[str | int, ...] = ("identities", index)
        _require(identity.name not in seen, (*path, "name"), identity.name,
                 "a name not used by another identity")
        seen.add(identity.name)
        if "*" in identity.merchants:
            _require(identity.merchants == ("*",), (*path, "merchants"), identity.merchants,
                     '["*"] alone or merchant ids')
            continue
        for merchant_id in identity.merchants:
            _require(merchant_id in known, (*path, "merchants"), merchant_id,
                     "ids of configured merchants")


# ------------------------------------------------------------------------- loading


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not valid TOML: not UTF-8") from None


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    keys = _env_keys()
    for name in environ:
        if not name.startswith(ENV_PREFIX) or name in keys or name == CONFIG_ENV:
            continue
        for section in _STRICT_ENV_SECTIONS:
            if name.startswith(f"{ENV_PREFIX}{section.upper()}_"):
                raise ConfigError(f"unknown setting {name} (no key {section}."
                                  f"{name[len(ENV_PREFIX) + len(section) + 1:].lower()})")
    found = [(name, path) for name, path in _LEGACY_ENV.items() if name in environ]
    found += [(name, path) for name, (path, _tp) in keys.items() if name in environ]
    for name, path in found:  # legacy names first, so the new names win
        table = data
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{_where(path[:-1])}: expected a table")
        table[path[-1]] = _EnvText(name, environ[name])


def _defaults(data_dir: Path) -> GatewayConfig:
    return GatewayConfig(
        data_dir=data_dir,
        grpc=GrpcConfig(tls=tls_files(data_dir, "gateway-server")),
        network=NetworkConfig(tls=tls_files(data_dir, "gateway")),
        hsm=HsmConfig(directory=data_dir / "hsm"),
    )


def load_config(path: Path | None = None,
                environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """The effective configuration: embedded defaults < the TOML file (``path``, else
    ``$PAYGATE_CONFIG`` if set) < ``PAYGATE_*`` environment variables."""
    env = os.environ if environ is None else environ
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    data: dict[str, Any] = _read(path) if path is not None else {}
    _apply_env(data, env)
    _unknown(data, ("data_dir", *_SECTIONS, "merchants", "identities"), ())

    data_dir = _scalar(Path, data["data_dir"], ("data_dir",)) if "data_dir" in data else \
        Path("var")
    base = _defaults(data_dir)
    sections = {name: _section(cls, _table(data[name], (name,)), getattr(base, name), (name,))
                if name in data else getattr(base, name) for name, cls in _SECTIONS.items()}

    merchants = base.merchants
    if "merchants" in data:
        if not isinstance(data["merchants"], list):
            raise _fail(("merchants",), data["merchants"], "an array of tables ([[merchants]])")
        merchants = tuple(_merchant(m, ("merchants", i)) for i, m in enumerate(data["merchants"]))
    rate: RateLimit = sections["rate_limit"]
    if "identities" in data:
        if not isinstance(data["identities"], list):
            raise _fail(("identities",), data["identities"],
                        "an array of tables ([[identities]])")
        entries = tuple(_identity(v, ("identities", i), rate)
                        for i, v in enumerate(data["identities"]))
    elif "merchants" in data:
        entries = ()
    else:
        entries = base.identities.entries
    identities = Identities(entries=entries, merchant_ids=frozenset(m.id for m in merchants),
                            default_rate_limit=rate)
    config = GatewayConfig(data_dir=data_dir, merchants=merchants, identities=identities,
                           source=path, **sections)
    _check(config)
    return config


# ------------------------------------------------------------------------- rendering


def _toml_value(key: str, value: Any) -> str:
    if is_secret(key) and value not in ("", None):
        return f'"{MASK}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, tuple | list | frozenset):
        items = sorted(value) if isinstance(value, frozenset) else list(value)
        return "[" + ", ".join(_toml_value(key, v) for v in items) + "]"
    if dataclasses.is_dataclass(value):
        return "{ " + ", ".join(f"{f.name} = {_toml_value(f.name, getattr(value, f.name))}"
                                for f in dataclasses.fields(value)) + " }"
    raise TypeError(f"cannot render {type(value).__name__}")  # pragma: no cover


def _toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}")
    out.append('"')
    return "".join(out)


def render_config(config: GatewayConfig) -> str:
    """The configuration as TOML (loadable again), secrets masked."""
    lines = []
    if config.source is not None:
        lines.append(f"# from {config.source} and the environment")
    else:
        lines.append("# embedded defaults and the environment (no file)")
    lines.append(f"data_dir = {_toml_value('data_dir', config.data_dir)}")
    for name in _SECTIONS:
        section = getattr(config, name)
        lines += ["", f"[{name}]"]
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            lines.append(f"{f.name} = {_toml_value(f.name, value)}")
    for merchant in config.merchants:
        lines += ["", "[[merchants]]"]
        for key in _MERCHANT_KEYS:
            lines.append(f"{key} = {_toml_value(key, getattr(merchant, key))}")
    for identity in config.identities:
        lines += ["", "[[identities]]", f"name = {_toml_value('name', identity.name)}",
                  f"merchants = {_toml_value('merchants', identity.merchants)}"]
        if identity.rate_limit is not None:
            lines.append(f"rate_limit = {_toml_value('rate_limit', identity.rate_limit)}")
    return "\n".join(lines) + "\n"
