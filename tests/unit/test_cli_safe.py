"""The command line's manners (issue 24): a closed pipe ends a run quietly, teardown and migrate ask before they
remove anything, read-only tasks write nothing beside the inventory, and `pitunnel init` gives a first
inventory. Loopback only, no lab: every host here is an address nothing listens on."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from invoke import Program

from pitunnel import failures, link as link_module
from pitunnel.console import namespace

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


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(link_module._tcp, "__kwdefaults__", {"within": 0.2})  # refused: retried 0.2 s, not 3
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.ssh/id_* of whoever runs the tests
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    failures.silence_paramiko()


def run(*args: str) -> tuple[int, str, str]:
    """`pitunnel ARGS` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            Program(namespace=namespace(), name="pitunnel", binary="pitunnel").run(["pitunnel", *args])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_verify_and_status_write_nothing_beside_the_inventory(inv_file: Path, quick: None) -> None:
    before = sorted(p.name for p in inv_file.parent.iterdir())
    for task in ("status", "verify"):
        code, out, err = run(task, "-i", str(inv_file))
        assert code == 4 and "Traceback" not in out + err
        assert sorted(p.name for p in inv_file.parent.iterdir()) == before, task  # no hosts.ports.yml, nothing
        assert f"ports: auto ports not recorded yet (pi1/ssh@main); a provisioning run records them in " \
               f"{inv_file.parent / 'hosts.ports.yml'}" in err
    code, _, _ = run("provision", "--check", "-i", str(inv_file))
    assert code == 4 and not (inv_file.parent / "hosts.ports.yml").exists()
    code, _, err = run("provision-vps", "-i", str(inv_file))  # a task that changes hosts records them at once
    assert code == 4 and (inv_file.parent / "hosts.ports.yml").exists() and "not recorded yet" not in err
    code, _, err = run("status", "-i", str(inv_file))
    assert code == 4 and "not recorded yet" not in err


def test_verbose_shows_the_connection_settings_of_the_hosts_the_task_works_on_alone(inv_file: Path,
                                                                                    quick: None) -> None:
    code, out, _ = run("provision-vps", "-v", "-i", str(inv_file))
    described = {line.split()[0] for line in out.splitlines() if line.startswith(" " * 13)}
    assert code == 4 and described == {"main"} and "main       user root (default)" in out
    code, out, _ = run("provision-pi", "-v", "-i", str(inv_file), "-l", "pi1")
    assert code == 4 and "pi1        user pi (default)" in out and "pi2        user" not in out
