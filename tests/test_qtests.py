# Runs the C qtests (tests/qtest/) and unit tests (tests/unit/), built by
# `make qemu`, under pytest, one pytest case per TAP test case, so that each
# one is reported by name.
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import re
import subprocess
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
# $MPQEMU_QBUILD: another build tree, e.g. the sanitizer build (check-sanitizers.sh)
QBUILD = Path(os.environ.get("MPQEMU_QBUILD", TOP / "build" / "qemu-build"))
QTEST_DIR = QBUILD / "mpqemu" / "tests"
BINARIES = ["mpqemu-proxy-test", "mpqemu-protocol-test", "mpqemu-msix-test",
            "mpqemu-channel-test", "mpqemu-link-test"]
TIMEOUT_S = 600

_results = {}


def run_binary(name):
    """Run one qtest binary once; return ({case: (ok, text)}, output)."""
    if name in _results:
        return _results[name]
    env = dict(os.environ, QTEST_QEMU_BINARY="./qemu-system-x86_64")
    proc = subprocess.run([str(QTEST_DIR / name), "--tap", "-k"],
                          cwd=QBUILD, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    output = proc.stdout + proc.stderr
    cases = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^(ok|not ok) \d+ (\S+)", line)
        if m:
            cases[m.group(2)] = (m.group(1) == "ok", line)
    _results[name] = (cases, output, proc.returncode)
    return _results[name]


def list_cases(name):
    """Ask the binary for its test paths without running them."""
    binary = QTEST_DIR / name
    if not binary.exists():
        return [f"{name} (not built)"]
    proc = subprocess.run([str(binary), "-l"], capture_output=True,
                          text=True, timeout=60,
                          env=dict(os.environ,
                                   QTEST_QEMU_BINARY="./qemu-system-x86_64"))
    paths = [l.strip() for l in proc.stdout.splitlines()
             if l.strip().startswith("/")]
    return paths or [f"{name} (lists no tests)"]


PARAMS = [(b, c) for b in BINARIES for c in list_cases(b)]


@pytest.mark.parametrize("binary,case", PARAMS,
                         ids=[f"{b}:{c}" for b, c in PARAMS])
def test_qtest(binary, case):
    assert (QTEST_DIR / binary).exists(), f"{binary} was not built"
    assert case.startswith("/"), f"{binary} registers no test cases"
    cases, output, returncode = run_binary(binary)
    # TAP names carry the target architecture in front of the path
    found = [v for k, v in cases.items() if k.endswith(case)]
    assert found, f"{case} did not run:\n{output[-4000:]}"
    ok, line = found[0]
    assert ok, f"{line}\n{output[-8000:]}"
