"""The gateway's configuration: embedded defaults, the TOML file, PAYGATE_* overrides,
errors that name the key (never a secret), identities and the merchant directory."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.config import (
    ConfigError,
    GatewayConfig,
    RateLimit,
    load_config,
    render_config,
)
from gateway.merchants import MerchantConfigError, MerchantDirectory

PAYGATE = str(Path(sys.executable).with_name("paygate"))

FULL = """
data_dir = "/srv/paygate"

[grpc]
listen = "0.0.0.0:6000"
grace_seconds = 3
max_concurrent_rpcs = 50
tls = { ca = "/etc/paygate/callers-ca.crt" }

[http]
listen = "[::1]:9090"
max_body = 4096

[network]
host = "network.example"
port = 9583
terminal_id = "TERM0042"
acquirer_id = "12345678901"
deadline_seconds = 1.5
max_in_flight = 32
connections = 3

[network.tls]
cert = "/etc/paygate/net.crt"
key = "/etc/paygate/net.key"
ca = "/etc/paygate/net-ca.crt"

[hsm]
backend = "pkcs11"
token_label = "prod"

[rate_limit]
rate = 10.0
burst = 20

[intake]
max_age = 300
max_skew = 30

[logging]
level = "debug"
json = true

[[merchants]]
id = "shop"
name = "The Shop"
publishable_keys = ["pk_live_shop"]
allowed_origins = ["https://shop.example"]
card_acceptor_id = "SHOP0001"
mcc = "5411"

[[merchants]]
id = "books"
publishable_keys = ["pk_live_books"]

[[identities]]
name = "checkout-service"
merchants = ["shop"]
rate_limit = { rate = 50.0 }

[[identities]]
name = "ops-console"
merchants = ["*"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "paygate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ or {})
    return str(info.value)


def test_defaults_without_a_file() -> None:
    """With no file and no environment the embedded defaults apply, paths under var/."""
    config = load_config(environ={})
    assert config.source is None
    assert config.data_dir == Path("var")
    assert config.grpc.listen == "127.0.0.1:50051" and config.grpc.port == 50051
    assert config.grpc.grace_seconds == 10.0
    assert config.grpc.tls.cert == Path("var/pki/gateway-server.crt")
    assert config.grpc.tls.key == Path("var/pki/gateway-server.key")
    assert config.grpc.tls.ca == Path("var/pki/ca.crt")
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    net = config.network
    assert (net.host, net.port, net.terminal_id, net.acquirer_id) == (
        "127.0.0.1", 8583, "TERM0001", "440001")
    assert (net.deadline_seconds, net.max_in_flight, net.connections) == (2.0, 256, 1)
    assert net.tls.credentials().cert == Path("var/pki/gateway.crt")
    assert config.hsm.backend == "software" and config.hsm.directory == Path("var/hsm")
    assert (config.intake.max_age, config.intake.max_skew) == (600, 60)
    assert config.logging.level == "info" and config.logging.json is False
    assert [m.id for m in config.merchants] == ["acme", "globex"]
    assert [i.name for i in config.identities] == ["checkout-service"]
    assert config == GatewayConfig()


def test_file_values_are_read(tmp_path: Path) -> None:
    """Every section of a TOML file is read, typed, and unset paths follow data_dir."""
    config = load_config(_write(tmp_path, FULL), {})
    assert config.data_dir == Path("/srv/paygate")
    assert config.grpc.listen == "0.0.0.0:6000" and config.grpc.grace_seconds == 3.0
    assert isinstance(config.grpc.grace_seconds, float)
    assert config.grpc.max_concurrent_rpcs == 50
    assert config.grpc.tls.ca == Path("/etc/paygate/callers-ca.crt")
    assert config.grpc.tls.cert == Path("/srv/paygate/pki/gateway-server.crt")
    assert (config.http.host, config.http.port, config.http.max_body) == ("::1", 9090, 4096)
    net = config.network
    assert (net.host, net.port, net.terminal_id, net.acquirer_id) == (
        "network.example", 9583, "TERM0042", "12345678901")
    assert (net.deadline_seconds, net.max_in_flight, net.connections) == (1.5, 32, 3)
    assert net.tls.key == Path("/etc/paygate/net.key")
    assert config.hsm.backend == "pkcs11" and config.hsm.token_label == "prod"
    assert config.hsm.directory == Path("/srv/paygate/hsm")
    assert config.rate_limit == RateLimit(rate=10.0, burst=20)
    assert (config.intake.max_age, config.intake.max_skew) == (300, 30)
    assert config.intake.policy().max_age == 300
    assert config.logging.level == "debug" and config.logging.json is True
    assert [m.id for m in config.merchants] == ["shop", "books"]


def test_paygate_config_names_the_file(tmp_path: Path) -> None:
    """PAYGATE_CONFIG names the file when no path is given."""
    path = _write(tmp_path, '[network]\nterminal_id = "TERM0777"\n')
    config = load_config(environ={"PAYGATE_CONFIG": str(path)})
    assert config.source == path and config.network.terminal_id == "TERM0777"


def test_environment_overrides_are_typed(tmp_path: Path) -> None:
    """PAYGATE_<SECTION>_<KEY> overrides the file and is parsed as the key's type."""
    path = _write(tmp_path, FULL)
    config = load_config(path, {
        "PAYGATE_DATA_DIR": "/data",
        "PAYGATE_GRPC_LISTEN": "127.0.0.1:7000",
        "PAYGATE_GRPC_TLS_CERT": "/certs/server.crt",
        "PAYGATE_NETWORK_DEADLINE_SECONDS": "0.25",
        "PAYGATE_NETWORK_PORT": "8600",
        "PAYGATE_LOGGING_JSON": "false",
        "PAYGATE_RATE_LIMIT_BURST": "7",
        "PAYGATE_HTTP_MAX_BODY": "1024",
    })
    assert config.data_dir == Path("/data")
    assert config.grpc.listen == "127.0.0.1:7000"
    assert config.grpc.tls.cert == Path("/certs/server.crt")
    assert config.grpc.tls.key == Path("/data/pki/gateway-server.key")
    assert config.grpc.tls.ca == Path("/etc/paygate/callers-ca.crt")   # from the file
    assert config.network.deadline_seconds == 0.25
    assert config.network.port == 8600 and isinstance(config.network.port, int)
    assert config.logging.json is False
    assert config.rate_limit == RateLimit(rate=10.0, burst=7)
    assert config.http.max_body == 1024
    assert config.hsm.directory == Path("/data/hsm")


def test_hsm_environment_names_old_and_new() -> None:
    """The HSM's older variables still apply, and the PAYGATE_HSM_* names win over them."""
    old = load_config(environ={"PAYGATE_HSM": "pkcs11", "PAYGATE_PKCS11_TOKEN": "t1",
                               "PAYGATE_PKCS11_PIN": "1234", "PAYGATE_HSM_MASTER_KEY": "x"})
    assert (old.hsm.backend, old.hsm.token_label, old.hsm.pin) == ("pkcs11", "t1", "1234")
    new = load_config(environ={"PAYGATE_HSM": "pkcs11", "PAYGATE_HSM_BACKEND": "software",
                               "PAYGATE_PKCS11_PIN": "1234", "PAYGATE_HSM_PIN": "9999"})
    assert (new.hsm.backend, new.hsm.pin) == ("software", "9999")


@pytest.mark.parametrize(("text", "environ", "key"), [
    ('[grpc]\nmax_concurrent_rpcs = "many"\n', {}, "grpc.max_concurrent_rpcs"),
    ("[logging]\njson = 1\n", {}, "logging.json"),
    ("[network]\ndeadline_seconds = true\n", {}, "network.deadline_seconds"),
    ("data_dir = 3\n", {}, "data_dir"),
    ("[grpc]\ntls = 5\n", {}, "grpc.tls"),
    ("", {"PAYGATE_NETWORK_PORT": "eighty"}, "PAYGATE_NETWORK_PORT (network.port)"),
    ("", {"PAYGATE_LOGGING_JSON": "maybe"}, "PAYGATE_LOGGING_JSON (logging.json)"),
    ("", {"PAYGATE_NETWORK_DEADLINE_SECONDS": "nan"}, "PAYGATE_NETWORK_DEADLINE_SECONDS"),
    ('[[merchants]]\nid = "x"\nmcc = 5411\n', {}, "merchants[0].mcc"),
    ('[[identities]]\nname = "a"\nmerchants = "acme"\n', {}, "identities[0].merchants"),
])
def test_wrong_types_name_the_key(tmp_path: Path, text: str, environ: dict[str, str],
                                  key: str) -> None:
    """A value of the wrong type raises ConfigError naming the key (or the variable)."""
    assert key in _error(tmp_path, text, environ)


@pytest.mark.parametrize(("text", "environ", "key"), [
    ('[grpc]\nlistn = "x"\n', {}, "grpc.listn"),
    ('[grcp]\nlisten = "x"\n', {}, "grcp"),
    ('[network.tls]\ncrt = "x"\n', {}, "network.tls.crt"),
    ('[[merchants]]\nid = "m"\ncolour = "red"\n', {}, "merchants[0].colour"),
    ('[[identities]]\nname = "a"\nmerchant = ["acme"]\n', {}, "identities[0].merchant"),
    ("", {"PAYGATE_NETWORK_HOSTNAME": "x"}, "PAYGATE_NETWORK_HOSTNAME"),
])
def test_unknown_keys_name_the_key(tmp_path: Path, text: str, environ: dict[str, str],
                                   key: str) -> None:
    """An unknown key (or PAYGATE_<SECTION>_ variable) raises ConfigError naming it."""
    message = _error(tmp_path, text, environ)
    assert "unknown" in message and key in message


@pytest.mark.parametrize(("text", "key"), [
    ('[grpc]\nlisten = "no-port"\n', "grpc.listen"),
    ('[network]\nterminal_id = "T1"\n', "network.terminal_id"),
    ('[network]\nacquirer_id = "44A"\n', "network.acquirer_id"),
    ("[network]\ndeadline_seconds = 0\n", "network.deadline_seconds"),
    ("[network]\nconnections = 0\n", "network.connections"),
    ('[hsm]\nbackend = "cloud"\n', "hsm.backend"),
    ('[logging]\nlevel = "loud"\n', "logging.level"),
    ("[rate_limit]\nburst = 0\n", "rate_limit.burst"),
    ('[[merchants]]\nid = "m"\ncard_acceptor_id = "SIXTEEN-CHARS-XX"\n', "merchants[0]"),
    ('[[merchants]]\nid = "m"\nmcc = "59"\n', "merchants[0]"),
    ('[[identities]]\nname = "a"\nmerchants = ["nobody"]\n', "identities[0].merchants"),
    ('[[identities]]\nname = "a"\nmerchants = ["*", "acme"]\n', "identities[0].merchants"),
    ('[[identities]]\nname = "a"\n[[identities]]\nname = "a"\n', "identities[1].name"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    """A value out of range or inconsistent raises ConfigError naming the key."""
    assert key in _error(tmp_path, text)


def test_a_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    """A file that cannot be read or parsed raises ConfigError naming the file."""
    assert "not valid TOML" in _error(tmp_path, "[grpc\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", {})


def test_secret_values_are_never_echoed(tmp_path: Path) -> None:
    """A bad PIN names hsm.pin without its value; the PIN is masked when rendered and hidden
    from the repr."""
    message = _error(tmp_path, "[hsm]\npin = 86420975\n")
    assert "hsm.pin" in message and "86420975" not in message
    config = load_config(environ={"PAYGATE_HSM_PIN": "86420975"})
    assert config.hsm.pin == "86420975"
    assert "86420975" not in render_config(config)
    assert "86420975" not in repr(config)
    assert 'pin = "********"' in render_config(config)


def test_render_is_toml_that_loads_back(tmp_path: Path) -> None:
    """The rendered configuration is TOML that loads back to an equal configuration."""
    config = load_config(_write(tmp_path, FULL), {})
    text = render_config(config)
    tomllib.loads(text)
    again = load_config(_write(tmp_path, text), {})
    assert again == config


def test_merchants_for_identities(tmp_path: Path) -> None:
    """merchants_for gives an identity's merchants, all of them for "*", None if unknown."""
    default = load_config(environ={})
    assert default.merchants_for("checkout-service") == frozenset({"acme", "globex"})
    assert default.identities.merchants_for("stranger") is None
    config = load_config(_write(tmp_path, FULL), {})
    assert config.identities.merchants_for("checkout-service") == frozenset({"shop"})
    assert config.identities.merchants_for("ops-console") == frozenset({"shop", "books"})
    assert config.identities.may_act_for("ops-console", "books")
    assert not config.identities.may_act_for("checkout-service", "books")
    assert not config.identities.may_act_for("stranger", "shop")
    assert "ops-console" in config.identities and len(config.identities) == 2


def test_rate_limits_per_identity(tmp_path: Path) -> None:
    """An identity's own rate limit applies (unset parts from [rate_limit]); others get
    the default; unknown identities get None."""
    config = load_config(_write(tmp_path, FULL), {})
    assert config.identities.rate_limit_for("checkout-service") == RateLimit(50.0, 20)
    assert config.identities.rate_limit_for("ops-console") == RateLimit(10.0, 20)
    assert config.identities.rate_limit_for("stranger") is None


def test_merchants_without_identities_allow_nobody(tmp_path: Path) -> None:
    """A file with its own merchants and no identities has no identities."""
    config = load_config(_write(tmp_path, '[[merchants]]\nid = "solo"\n'), {})
    assert [m.id for m in config.merchants] == ["solo"]
    assert len(config.identities) == 0 and config.merchants_for("checkout-service") is None


def test_merchant_directory_from_config(tmp_path: Path) -> None:
    """The merchant directory holds the configured merchants with field 42 padded to 15
    (derived from the id when not set) and field 18 defaulting to 5999."""
    directory = load_config(_write(tmp_path, FULL), {}).merchant_directory()
    shop = directory.by_publishable_key("pk_live_shop")
    assert shop is not None and shop.id == "shop" and shop.name == "The Shop"
    assert shop.card_acceptor_id == "SHOP0001       " and shop.mcc == "5411"
    assert shop.allowed_origins == ("https://shop.example",)
    books = directory.get("books")
    assert books is not None and books.name == "books"
    assert books.card_acceptor_id == "BOOKS          " and books.mcc == "5999"
    demo = load_config(environ={}).merchant_directory()
    acme = demo.by_publishable_key("pk_test_acme")
    assert acme is not None and len(acme.card_acceptor_id) == 15


def test_json_directories_keep_working() -> None:
    """MerchantDirectory.from_data still takes the old JSON shape, and refuses two merchants
    sharing a card acceptor id."""
    directory = MerchantDirectory.from_data(
        {"merchants": [{"id": "old", "publishable_keys": ["pk_old"]}]})
    old = directory.get("old")
    assert old is not None and old.card_acceptor_id == "OLD            " and old.mcc == "5999"
    with pytest.raises(MerchantConfigError, match="card_acceptor_id"):
        MerchantDirectory.from_data({"merchants": [
            {"id": "a", "card_acceptor_id": "SAME"}, {"id": "b", "card_acceptor_id": "SAME"}]})


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    env.update(extra)
    return env


def test_config_show_command(tmp_path: Path) -> None:
    """`paygate config show` prints the effective TOML with the PIN masked, and exits 1
    naming the key for a bad file."""
    path = _write(tmp_path, '[network]\nterminal_id = "TERM0999"\n')
    proc = subprocess.run([PAYGATE, "config", "show", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=_clean_env(PAYGATE_HSM_PIN="24680135"))
    assert proc.returncode == 0, proc.stderr
    shown = tomllib.loads(proc.stdout)
    assert shown["network"]["terminal_id"] == "TERM0999"
    assert shown["hsm"]["pin"] == "********" and "24680135" not in proc.stdout
    bad = _write(tmp_path, "[grpc]\nmax_concurrent_rpcs = -1\n")
    proc = subprocess.run([PAYGATE, "config", "show", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=_clean_env())
    assert proc.returncode == 1 and "grpc.max_concurrent_rpcs" in proc.stderr


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """A config file of invalid UTF-8 raises ConfigError, and `paygate config show` says
    so without a traceback."""
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML: not UTF-8"):
        load_config(bad, {})
    proc = subprocess.run([PAYGATE, "config", "show", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=_clean_env())
    assert proc.returncode == 1 and "not valid TOML: not UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr
