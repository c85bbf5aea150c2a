"""The command line's manners (issue 24): a closed pipe ends a run quietly, teardown and migrate ask before they
remove anything, read-only tasks write nothing beside the inventory, and `pitunnel init` gives a first
inventory. Loopback only, no lab: every host here is an address nothing listens on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from pitunnel import failures, taskkit
from pitunnel.inventory import load_inventory
from pitunnel.inventory.checks import plain_http_names
from tests.unit.test_cli_errors import run

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
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.ssh/id_* of whoever runs the tests
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    failures.silence_paramiko()


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


# ------------------------------------------------------------------ teardown and migrate ask first


class Door:
    """A loopback port that counts every connection made to it and closes each at once (so a run that goes on
    to the hosts fails fast: "closed before login")."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.count = 0
        self.open = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.open:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.count += 1
            conn.close()

    def knocked(self) -> int:
        """How many connections reached the door so far."""
        time.sleep(0.2)
        return self.count

    def close(self) -> None:
        self.open = False
        self.thread.join()
        self.listener.close()


@pytest.fixture
def door(tmp_path: Path) -> Iterator[tuple[Door, Path]]:
    """The door, and an inventory whose hosts all sit behind it: two VPSes and a Pi."""
    door = Door()
    file = tmp_path / "hosts.yml"
    file.write_text(textwrap.dedent(f"""
        settings: {{laptop_key: null, known_hosts: kh}}
        vps:
          main: {{address: 127.0.0.1, port: {door.port}, connect_timeout: 1}}
          next: {{address: 127.0.0.1, port: {door.port}, connect_timeout: 1, http_port: 8080, https_port: 8443}}
        pis:
          pi1: {{address: 127.0.0.1, port: {door.port}, connect_timeout: 1, vps: main,
                tunnels: {{ssh: {{type: ssh, remote_port: 20024}}}}}}
        """))
    yield door, file
    door.close()


def spawn(*args: str, cwd: Path) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, pitunnel(*args)[1:], env=ENV, cwd=str(cwd), encoding="utf-8", timeout=60)


@pytest.mark.parametrize(("task", "args", "says"), [
    ("teardown", (), ["main (VPS): the tunnel account pitunnel with every Pi's key, its sshd Match block",
                      "pi1 (Pi): its tunnel units (to main), their watchdog"]),
    ("teardown", ("--purge", "-l", "pi1"), ["pi1 (Pi): its tunnel units (to main), their watchdog, pitunnel's files "
                                            "and sshd drop-ins, the tunnel account pitunnel or its key, the autossh "
                                            "package", "main (VPS): the keys of pi1 (its tunnel account and the "
                                            "other Pis stay)"]),
    ("migrate", ("--to", "next"), ["pi1 (Pi): its tunnel moves from main to next",
                                   "main (VPS): its pitunnel side (tunnel account, sshd Match block, Nginx sites) is "
                                   "removed once no Pi is left on it", "hosts.yml.bak kept"]),
])
def test_on_a_terminal_it_lists_what_goes_and_asks_before_any_host_is_touched(
        door: tuple[Door, Path], task: str, args: tuple[str, ...], says: list[str]) -> None:
    listener, file = door
    child = spawn(task, *args, "-i", str(file), cwd=file.parent)
    child.expect_exact(f"{task} will remove:")
    child.expect_exact(f"Go on with {task}? [y/N] ")
    listed = " ".join(child.before.split())
    assert all(" ".join(s.split()) in listed for s in says), listed
    assert listener.knocked() == 0  # the question comes before any connection
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == failures.USAGE == 3 and f"{task}: not confirmed, nothing was touched" in child.before
    assert listener.knocked() == 0 and not (file.parent / "hosts.yml.bak").exists()


def test_answered_yes_it_goes_on_to_the_hosts(door: tuple[Door, Path]) -> None:
    listener, file = door
    child = spawn("teardown", "-i", str(file), cwd=file.parent)
    child.expect_exact("Go on with teardown? [y/N] ")
    assert listener.knocked() == 0
    child.sendline("y")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == failures.UNREACHABLE and listener.knocked() >= 1  # it went to the hosts: none answered SSH
    assert "PLAY RECAP" in child.before and "not confirmed" not in child.before


@pytest.mark.parametrize("task", [("teardown",), ("teardown", "--purge"), ("migrate", "--to", "next")])
def test_without_a_terminal_it_refuses_unless_yes_and_check_needs_no_answer(
        door: tuple[Door, Path], task: tuple[str, ...]) -> None:
    listener, file = door

    def run_here(*more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(pitunnel(*task, "-i", str(file), *more), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, env=ENV, cwd=file.parent, timeout=60)

    refused = run_here()
    assert refused.returncode == 3 and refused.stderr.splitlines()[-1] == (
        f"{task[0]}: asks before it removes anything, but there is no terminal to ask on: add --yes to run it "
        "unattended (nothing was touched)"), refused.stderr
    assert listener.knocked() == 0 and "Go on" not in refused.stderr
    for more in (("--yes",), ("-y",), ("--check",)) if task == ("teardown",) else (("--yes",),):
        went = run_here(*more)
        assert went.returncode & failures.UNREACHABLE and "Go on" not in went.stderr, went.stderr
        assert listener.knocked() >= 1


# ------------------------------------------------------------------ pitunnel init


@pytest.fixture
def away(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of a pip user's own, outside the checkout, with no inventory anywhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PITUNNEL_INVENTORY", raising=False)
    monkeypatch.setattr(taskkit, "CHECKOUT", False)
    return tmp_path


def test_with_no_inventory_the_message_points_to_init(away: Path) -> None:
    code, _, err = run("status")
    assert code == 3 and err.strip() == ("no inventory at inventory/hosts.yml (from ./inventory/hosts.yml). Fix: "
                                         "`pitunnel init` writes a first one there to fill in (or give yours with -i "
                                         "FILE or $PITUNNEL_INVENTORY)")
    assert "`pitunnel init` writes a first one" in taskkit.FLAGS["inventory"].metadata["help"]
    assert "lab" not in taskkit.FLAGS["inventory"].metadata["help"] and "checkout" not in err


def test_init_writes_a_first_inventory_that_loads_and_never_overwrites_one(away: Path, quick: None) -> None:
    code, out, err = run("init")
    written = away / "inventory" / "hosts.yml"
    assert code == 0 and out.startswith("wrote inventory/hosts.yml: change its lines marked CHANGE"), out + err
    inv = load_inventory(written, save_allocations=False)  # as written: no error, no warning to fix first
    assert list(inv.vps) == ["main"] and list(inv.pis) == ["pi1"]
    assert [(t.name, t.kind) for t in inv.pis["pi1"].tunnels] == [("ssh", "ssh"), ("web", "http")]
    assert inv.vps["main"].address == "203.0.113.10" and inv.pis["pi1"].address == "192.168.1.50"
    assert not inv.pis["pi1"].disable_password_login and inv.vps["main"].acme is None
    assert plain_http_names(inv.vps, inv.pis.values()) == []
    assert written.read_text().count("# CHANGE") == 6  # the addresses, users, sshd port and app port to fill in
    kept = written.read_text() + "# mine\n"
    written.write_text(kept)
    code, out, err = run("init")
    assert code == 3 and written.read_text() == kept and err.strip() == (
        "init: inventory/hosts.yml exists already, and init never overwrites a file. Fix: edit it, or give another "
        "path with -i FILE")
    code, out, _ = run("init", "-i", "fleet/far.yml")
    assert code == 0 and (away / "fleet" / "far.yml").read_text() == written.read_text()[:-len("# mine\n")]
    assert out.rstrip().endswith("(each with -i fleet/far.yml)")
    code, _, err = run("status", "-i", "fleet/far.yml", "-l", "nosuch")
    assert code == 3 and "matches no host" in err and "WARNING" not in err  # it loads with the real loader too


def test_the_wheel_carries_the_template() -> None:
    """A non-editable `pip install .` has it (the lab's test_cli_lab installs one and runs `pitunnel init`)."""
    import tomllib
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "starter.yml" in data["pitunnel.inventory"] and (ROOT / "pitunnel" / "inventory" / "starter.yml").is_file()


def test_a_named_route_without_https_is_warned_about_when_the_inventory_loads(tmp_path: Path, quick: None) -> None:
    file = tmp_path / "hosts.yml"
    file.write_text(textwrap.dedent(f"""
        settings: {{laptop_key: null, known_hosts: kh}}
        vps:
          main: {{address: 127.0.0.1, port: {free_port()}}}
          safe: {{address: 127.0.0.2, port: {free_port()}, acme: {{email: me@example.com}}}}
        pis:
          pi1: {{address: 127.0.0.1, port: {free_port()}, vps: [main, safe], tunnels: {{
                 cam: {{type: http, server_name: cam.example.com}}, web: {{type: http}}}}}}
        """))
    code, _, err = run("status", "-i", str(file))
    warned = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert code == 4 and warned == [
        "WARNING: pi1/cam: cam.example.com is served over plain HTTP by main, which has neither `acme:` for it nor "
        "tls_certificate. Fix: give vps.main `acme: {email: ...}` (docs/https.md; a wildcard name needs "
        "tls_certificate and tls_key)"]  # not for safe (acme), nor for the path route web
