# SPDX-License-Identifier: GPL-2.0-or-later
"""Errors a user sees when the proxy cannot reach its remote."""

import subprocess

import pytest

from mpqemu_vm import qemu_binary

MAIN_BASE = ["-accel", "tcg", "-object", "memory-backend-memfd,id=mem,size=512M",
             "-numa", "node,memdev=mem", "-m", "512",
             "-nodefaults", "-display", "none", "-S"]


def run_main(machine, device, timeout=30):
    args = [qemu_binary(), "-machine", machine] + MAIN_BASE + ["-device", device]
    try:
        return subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"QEMU still running after {timeout}s: {' '.join(args)}")
    return None


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_proxy_socket_path_missing(machine):
    path = "/nonexistent/path"
    device = f"x-pci-proxy-dev,id=x,socket={path}"
    res = run_main(machine, device)
    assert res.returncode != 0, f"QEMU accepted an unreachable socket:\n{res.stderr}"
    assert "not a valid device model" not in res.stderr, res.stderr
    # QEMU prefixes errors with the offending option, which already holds the
    # path: the message itself must name it too.
    message = res.stderr.replace(f"-device {device}", "")
    assert path in message, f"error message does not name {path}:\n{res.stderr}"
