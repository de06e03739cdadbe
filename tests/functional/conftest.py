# SPDX-License-Identifier: GPL-2.0-or-later
"""pytest glue for the mpqemu functional tests."""

import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))
for _p in (_HERE, os.path.join(_REPO, "build", "qemu-src", "python")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from mpqemu_vm import VM  # noqa: E402  pylint: disable=wrong-import-position


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # pylint: disable=unused-argument
    """Attach the QEMU logs and the serial console of every VM a failed test used."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when == "call":
        for value in getattr(item, "funcargs", {}).values():
            # A fixture gives a VM, or a factory that lists the VMs it started.
            for vm in [value] if isinstance(value, VM) else getattr(value, "started_vms", []):
                rep.sections.append((f"mpqemu logs of VM {vm.name}", vm.logs()))
