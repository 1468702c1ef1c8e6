"""The certification harness: scripted and recorded network exchanges, played by netsim.

Owns the case format (``case.schema.json``, :mod:`netsim.certify.script`), the field
matchers and their card-data-safe mismatch reports (:mod:`netsim.certify.matchers`),
the replay host that plays the network from a script and checks every message it
receives (:mod:`netsim.certify.host`), the recorder that writes a live session as a
replayable JSON-lines file (:mod:`netsim.certify.recorder`), the runner behind
``paygate certify`` that drives a gateway through the public gRPC API
(:mod:`netsim.certify.runner`), its pass/fail table and JUnit XML
(:mod:`netsim.certify.report`), and the shipped suites (``suites/``).
See ``netsim/certify/README.md``.
"""

from __future__ import annotations

from pathlib import Path

SUITES = Path(__file__).resolve().parent / "suites"

__all__ = ["SUITES"]
