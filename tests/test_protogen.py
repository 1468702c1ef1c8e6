"""Build-time stub generation: `-I proto` gives package-qualified imports."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _protogen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("protogen", ROOT / "proto" / "protogen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_stubs_import_each_other_by_package(tmp_path: Path) -> None:
    """Two protos in acme/v1, one importing the other, generate modules that import as
    `acme.v1.*` with grpc service stubs."""
    src = tmp_path / "proto" / "acme" / "v1"
    src.mkdir(parents=True)
    (src / "money.proto").write_text(
        'syntax = "proto3";\npackage acme.v1;\nmessage Money { int64 amount = 1; '
        "string currency = 2; }\n")
    (src / "shop.proto").write_text(
        'syntax = "proto3";\npackage acme.v1;\nimport "acme/v1/money.proto";\n'
        'import "google/protobuf/timestamp.proto";\n'
        "message Order { acme.v1.Money total = 1; google.protobuf.Timestamp at = 2; }\n"
        "service Shop { rpc Place(Order) returns (Order); }\n")
    out = tmp_path / "out"
    for pkg in (out / "acme", out / "acme" / "v1"):
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
    generated = _protogen().generate(tmp_path / "proto", out)
    names = sorted(p.name for p in generated)
    assert "shop_pb2_grpc.py" in names and "money_pb2.pyi" in names
    assert "from acme.v1 import money_pb2" in (out / "acme" / "v1" / "shop_pb2.py").read_text()
    probe = ("from acme.v1 import shop_pb2, shop_pb2_grpc\n"
             "o = shop_pb2.Order(); o.total.amount = 1999; o.total.currency = 'eur'\n"
             "assert shop_pb2.Order.FromString(o.SerializeToString()).total.amount == 1999\n"
             "assert hasattr(shop_pb2_grpc, 'ShopStub')\n")
    subprocess.run([sys.executable, "-c", probe], cwd=out, check=True, timeout=60)


def test_broken_proto_is_reported(tmp_path: Path) -> None:
    """A proto that does not compile raises ProtoError instead of producing stubs."""
    src = tmp_path / "proto" / "acme"
    src.mkdir(parents=True)
    (src / "bad.proto").write_text('syntax = "proto3";\nmessage {')
    protogen = _protogen()
    try:
        protogen.generate(tmp_path / "proto", tmp_path / "out")
    except protogen.ProtoError:
        return
    raise AssertionError("ProtoError was not raised")


def test_paygate_v1_package_is_installed() -> None:
    """The installed distribution provides the `paygate.v1` package for the stubs."""
    import paygate.v1

    assert Path(paygate.v1.__file__).parent.name == "v1"
