"""Build-time generation of the gRPC stubs from ``proto/paygate/v1/*.proto``.

Run with ``-I proto`` so that generated imports are package-qualified
(``from paygate.v1 import payments_pb2``); the stubs land beside an
``__init__.py`` tree that mirrors the proto paths. Used by ``setup.py``; the
generated files are never committed.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path


class ProtoError(RuntimeError):
    """protoc rejected a .proto file."""


def proto_files(proto_root: Path) -> list[Path]:
    """Every ``.proto`` under ``proto_root``, sorted, as paths relative to it."""
    return sorted(p.relative_to(proto_root) for p in proto_root.rglob("*.proto"))


def generate(proto_root: Path, out_dir: Path) -> list[Path]:
    """Generate ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` into ``out_dir``.

    Returns the generated files. Raises :class:`ProtoError` if protoc fails.
    """
    from grpc_tools import protoc

    files = proto_files(proto_root)
    if not files:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(proto_root / f) for f in files),
    ]
    if protoc.main(args) != 0:
        raise ProtoError(f"protoc failed on {[str(f) for f in files]}")
    generated: list[Path] = []
    for f in files:
        stem = out_dir / f.with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            path = Path(str(stem) + suffix)
            if path.exists():
                generated.append(path)
    return generated


if __name__ == "__main__":  # python proto/protogen.py OUT_DIR
    root = Path(__file__).resolve().parent
    for path in generate(root, Path(sys.argv[1] if len(sys.argv) > 1 else root)):
        print(path)
