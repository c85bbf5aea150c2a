"""The command line's manners (issue 24): a closed pipe ends a run quietly, teardown and migrate ask before they
remove anything, read-only tasks write nothing beside the inventory, and `pitunnel init` gives a first
inventory. Loopback only, no lab: every host here is an address nothing listens on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pitunnel import failures

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def inv_file(tmp_path: Path) -> Path:
    """A VPS and two Pis on closed loopback ports (every connection refused at once), one tunnel on an auto port."""
    file = tmp_path / "hosts.yml"
    file.write_text(textwrap.dedent(f"""
        settings: {{laptop_key: null, known_hosts: kh}}
        vps: {{main: {{address: 127.0.0.1, port: {free_port()}}}}}
        pis:
          pi1: {{address: 127.0.0.1, port: {free_port()}, tunnels: {{ssh: {{type: ssh, remote_port: auto}}}}}}
          pi2: {{address: 127.0.0.1, port: {free_port()}, tunnels: {{ssh: {{type: ssh, remote_port: 20025}}}}}}
        """))
    return file


def pitunnel(*args: str) -> list[str]:
    """The installed `pitunnel` command's entry point, run as a program of its own."""
    return [sys.executable, "-c", "from pitunnel.console import main; main()", *args]


ENV = {**os.environ, "HOME": "/nonexistent", "SSH_AUTH_SOCK": ""}


def test_a_closed_pipe_ends_the_run_quietly_as_ls_does(inv_file: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: `| head -0`, or a head that already had its line
    try:
        run = subprocess.run(pitunnel("status", "-i", str(inv_file)), stdout=write, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, env=ENV, cwd=inv_file.parent, text=True, timeout=60)
    finally:
        os.close(write)
    assert run.returncode == failures.CLOSED_PIPE == 141, run.stderr
    assert "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr and "Exception ignored" not in run.stderr
