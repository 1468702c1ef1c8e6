"""Build script: declares the codec's Cython kernel and generates the gRPC stubs.

Build switches (environment variables, read here):

* ``PAYGATE_NO_EXTENSIONS=1`` - build without the Cython kernel (pure-Python twin only).
* ``PAYGATE_DEBUG=1`` - compile the kernel with ``-O0 -g`` and Cython's C-level checks.
* ``PAYGATE_CYTHON_ANNOTATE=1`` - write Cython's HTML annotation next to the ``.pyx``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "proto"))

import protogen  # noqa: E402


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


#: The card iframe SDK's browser files, shipped inside the package for the HTTP edge.
SDK_SOURCES = ROOT / "sdk" / "js" / "src"
SDK_FILES = ("paygate.js", "frame.html", "frame.js", "frame.css", "card.js", "jwe.js")


def copy_sdk(build_lib: Path) -> None:
    """Copy ``sdk/js/src`` into ``gateway/edge/sdk_assets`` of the build tree."""
    target = build_lib / "gateway" / "edge" / "sdk_assets"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in SDK_FILES:
        shutil.copyfile(SDK_SOURCES / name, target / name)


class BuildWithProtos(build_py):
    """build_py that also generates the gRPC stubs and copies the SDK into the build tree."""

    def run(self) -> None:
        super().run()
        protogen.generate(ROOT / "proto", Path(self.build_lib))
        copy_sdk(Path(self.build_lib))


def extensions() -> list[Extension]:
    if _flag("PAYGATE_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize

    debug = _flag("PAYGATE_DEBUG")
    ext = Extension(
        "codec._kernel",
        ["codec/_kernel.pyx"],
        extra_compile_args=["-O0", "-g"] if debug else ["-O2"],
    )
    return list(
        cythonize(
            [ext],
            compiler_directives={
                "language_level": "3",
                "boundscheck": debug,
                "wraparound": False,
                "initializedcheck": debug,
            },
            annotate=_flag("PAYGATE_CYTHON_ANNOTATE"),
        )
    )


setup(
    packages=[
        "codec",
        "codec.specs",
        "gateway",
        "gateway.api",
        "gateway.edge",
        "gateway.network",
        "gateway.payments",
        "gateway.store",
        "gateway.vault",
        "hsm_sim",
        "reconciler",
        "netsim",
        "netsim.certify",
        "paygate",
        "paygate.v1",
    ],
    package_dir={"paygate": "proto/paygate"},
    package_data={
        "codec": ["*.pyx", "*.pxd", "*.pxi", "py.typed"],
        "codec.specs": ["*.json"],
        "netsim.certify": ["*.json", "*.md", "suites/*/*.json"],
        "gateway.edge": ["checkout_assets/*"],
        "paygate": ["py.typed"],
    },
    ext_modules=extensions(),
    cmdclass={"build_py": BuildWithProtos},
    zip_safe=False,
)
