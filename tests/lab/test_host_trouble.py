"""A host's own trouble is not a pitunnel bug (issue 24, point 8): with a lab host's /tmp read-only or full, the
shell there cannot store the script pitunnel sends. The run says so as a failed step with the host's own
error and a hint, never as an "internal error". `pitunnel` is run as a user runs it (a subprocess); each test
puts /tmp back as it was, whatever happens. One lab boot (a VPS and one Pi) for the module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import lab
from tests.conftest import ROOT, lab_up

pytestmark = pytest.mark.lab
PITUNNEL = str(Path(sys.executable).with_name("pitunnel"))


@pytest.fixture(scope="module")
def inventory() -> Path:
    return Path(lab_up(1).inventory)  # type: ignore[attr-defined]


@contextmanager
def broken_tmp(host: str, how: str) -> Iterator[None]:
    """The host's /tmp covered by a small tmpfs, read-only or filled up; uncovered after the block."""
    if how == "read-only":
        lab.exec_in(host, "mount -t tmpfs -o ro,size=1m pitunnel-test /tmp")
    else:
        lab.exec_in(host, "mount -t tmpfs -o size=64k pitunnel-test /tmp && "
                          "(dd if=/dev/zero of=/tmp/fill bs=4k 2>/dev/null || true) && touch /tmp/a /tmp/b 2>/dev/null; true")
    try:
        yield
    finally:
        lab.exec_in(host, "umount /tmp")


@pytest.mark.parametrize(("task", "host", "how", "error"), [
    ("provision-vps", "vps", "read-only", "Read-only file system"),
    ("provision-pi", "pi1", "full", "No space left on device"),
])
def test_a_host_whose_tmp_is_read_only_or_full_fails_its_step_with_its_own_error(
        inventory: Path, task: str, host: str, how: str, error: str) -> None:
    with broken_tmp(host, how):
        run = subprocess.run([PITUNNEL, task, "--check", "-i", str(inventory), "-l", host], cwd=ROOT,
                             capture_output=True, text=True, timeout=300, env=dict(os.environ))
    out = run.stdout + run.stderr
    assert run.returncode == 2, out
    assert re.search(rf"^failed +{host} +run a script - {host} cannot run a script: .*{error} "
                     rf"\(is / read-only or /tmp full on {host}\?\)$", run.stdout, re.M), out
    assert "internal error" not in out and "Traceback" not in out and "RuntimeError" not in out
    assert lab.exec_in(host, "findmnt -n -o SOURCE /tmp", check=False).stdout.strip() != "pitunnel-test"
