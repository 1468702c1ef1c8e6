"""The JavaScript SDK's own suite (``npm test`` in sdk/js: node:test) passes: the unit
tests of card.js and jwe.js and the browser test of the demo checkout in Chromium
(``sdk/js/test/checkout.browser.test.mjs``, which runs the installed ``paygate up``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "sdk" / "js"
#: One test of each file must have run (TAP names tests, not files).
EXPECTED = ("Luhn accepts valid test numbers", "RSA-OAEP-256 + A256GCM: header",
            "the demo checkout in Chromium", "a message from a foreign origin is ignored",
            "the idle, field-error and paid screens were captured as PNG images")


def test_npm_test_passes_in_sdk_js() -> None:
    """`npm test` in sdk/js exits 0, runs every test file, and nothing is skipped."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is not installed (apt-get install nodejs npm)"
    assert (SDK / "node_modules" / "playwright-core").is_dir(), \
        "sdk/js/node_modules is missing: run `make test` (it runs npm ci in sdk/js)"
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1", NODE_OPTIONS="--test-reporter=tap")
    proc = subprocess.run([npm, "test"], cwd=SDK, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    for name in EXPECTED:
        assert f" - {name}" in output, f"{name!r} did not run:\n{output}"
    summary = {line.split()[1]: int(line.split()[2]) for line in output.splitlines()
               if line.startswith("# ") and len(line.split()) == 3
               and line.split()[1] in ("tests", "pass", "fail", "skipped", "todo", "cancelled")}
    assert summary.get("fail") == 0 and summary.get("cancelled") == 0, output
    assert summary.get("skipped") == 0 and summary.get("todo") == 0, output
    assert summary.get("tests", 0) >= 30 and summary["pass"] == summary["tests"], output
