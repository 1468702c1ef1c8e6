"""A certification run's results: the pass/fail table and JUnit XML for CI systems.

The JUnit file has one ``<testsuite>`` (the suite's name) with one ``<testcase>``
per case (``classname`` = ``certify.SUITE``, ``time`` in seconds); a failed case has
one ``<failure>`` whose ``message`` names its first mismatch and whose text lists
them all, one per line. Mismatches carry card data masked (see
:mod:`netsim.certify.matchers`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from netsim.certify.runner import CaseResult

__all__ = ["junit_xml", "table", "write_junit"]


def table(results: Sequence[CaseResult]) -> str:
    """A fixed-width table: case, verdict, seconds, then each mismatch indented."""
    width = max([len(r.name) for r in results] + [4])
    lines = [f"{'case'.ljust(width)}  result  seconds"]
    for r in results:
        lines.append(f"{r.name.ljust(width)}  {'pass' if r.passed else 'FAIL':<6}  "
                     f"{r.seconds:7.2f}")
        lines.extend(f"    {m.render()}" for m in r.mismatches)
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed, "
                 f"{sum(r.seconds for r in results):.1f} s")
    return "\n".join(lines)


def junit_xml(suite: str, results: Sequence[CaseResult]) -> ET.ElementTree[ET.Element]:
    """The JUnit XML document of a run (see the module docstring)."""
    failures = sum(not r.passed for r in results)
    root = ET.Element("testsuite", name=suite, tests=str(len(results)),
                      failures=str(failures), errors="0",
                      time=f"{sum(r.seconds for r in results):.3f}")
    for r in results:
        case = ET.SubElement(root, "testcase", classname=f"certify.{suite}", name=r.name,
                             time=f"{r.seconds:.3f}")
        if r.mismatches:
            failure = ET.SubElement(case, "failure", type="mismatch",
                                    message=r.mismatches[0].render())
            failure.text = "\n".join(m.render() for m in r.mismatches)
    return ET.ElementTree(root)


def write_junit(path: Path, suite: str, results: Sequence[CaseResult]) -> None:
    tree = junit_xml(suite, results)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
