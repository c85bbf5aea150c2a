"""What `Play.start` wires into each host's connection before any is opened: the run's secrets masked for -vv,
the handshake lines named by host, notes and heartbeats under the host's name, remote output only with -v,
and --accept-changed-host-key handed to every host."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitunnel import sshdebug
from pitunnel.play import Options, Play
from pitunnel.remote import Remote
from tests.unit.fake_hosts import load

INVENTORY = """
settings: {laptop_key: null, known_hosts: kh}
vps:
  main: {address: 203.0.113.1, password_file: login.txt, sudo_password_file: sudo.txt}
pis:
  alpha:
    address: 10.0.0.2
    port: 2222
    tunnels:
      ssh: {type: ssh, remote_port: 20022}
"""


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    sshdebug.disable()
    sshdebug._secrets.clear()
    yield None
    sshdebug.disable()
    sshdebug._secrets.clear()


def started(tmp_path: Path, **options: object) -> tuple[Play, io.StringIO]:
    inv = load(tmp_path, INVENTORY, {"login.txt": "l0gin-Secret\n", "sudo.txt": "sud0-Secret\n"})
    out = io.StringIO()
    return Play.start(inv, Options(**options), out=out), out  # type: ignore[arg-type]


def test_with_vv_the_runs_passwords_are_masked_and_each_host_is_named_by_its_address(tmp_path: Path) -> None:
    play, _ = started(tmp_path, ssh_debug=True)
    assert sshdebug.masked("login l0gin-Secret, sudo sud0-Secret") == \
        f"login {sshdebug.MASK}, sudo {sshdebug.MASK}"
    assert sshdebug._installed[0].hosts == {("203.0.113.1", 22): "main", ("10.0.0.2", 2222): "alpha"}
    assert play.remotes["main"].credentials.login_password == "l0gin-Secret"


def test_without_vv_nothing_is_remembered_or_installed(tmp_path: Path) -> None:
    started(tmp_path)
    assert sshdebug._secrets == set() and sshdebug._installed == []


def test_each_hosts_notes_and_heartbeat_are_under_its_own_name_and_its_output_only_with_v(tmp_path: Path) -> None:
    play, out = started(tmp_path, accept_changed_host_key="SHA256:" + "A" * 43)
    alpha = play.remotes["alpha"]
    alpha.notify("a note")
    assert out.getvalue().split() == ["alpha", "a", "note"]
    with alpha.busy("a step"):
        pass
    assert alpha.echo is None and play.remotes["main"].echo is None
    assert {r.accept_changed_host_key for r in play.remotes.values()} == {"SHA256:" + "A" * 43}
    assert alpha.on_change == play.reporter.line
    (tmp_path / "v").mkdir()
    verbose, out = started(tmp_path / "v", verbose=True)
    echo = verbose.remotes["alpha"].echo
    assert echo is not None
    echo("remote says hi")
    assert "alpha" in out.getvalue() and "remote says hi" in out.getvalue()


def test_a_long_steps_heartbeat_names_the_host_it_runs_on(tmp_path: Path) -> None:
    """The line that says a step is still running names the host whose connection runs it."""
    play, out = started(tmp_path)
    play.reporter.heartbeat_after = play.reporter.heartbeat_every = 0.01
    with play.remotes["alpha"].busy("autossh installed"):
        deadline = time.monotonic() + 5
        while "autossh installed" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert out.getvalue().splitlines()[0].split()[1:3] == ["alpha", "autossh"]


def test_every_host_of_a_run_shares_one_key_ring_and_one_memory_of_hosts_out_of_reach(tmp_path: Path) -> None:
    play, _ = started(tmp_path)
    main, alpha = play.remotes["main"], play.remotes["alpha"]
    assert main.keys is alpha.keys and main.unanswered is alpha.unanswered  # a passphrase asked once per run
    assert alpha.gateway is main and main.gateway is None  # a Pi's tunnel starts at its VPS's connection
    (tmp_path / "again").mkdir()
    other, _ = started(tmp_path / "again")
    assert other.remotes["main"].keys is not main.keys  # another run: its own


def test_with_vv_a_login_line_logged_while_a_host_is_worked_on_is_named_by_that_host(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-vv: a paramiko line logged by the worker thread that works on alpha (a login runs there, before any
    peer address is known) is printed under alpha's name."""
    play, _ = started(tmp_path, ssh_debug=True)

    def work(remote: Remote) -> str:
        logging.getLogger("paramiko.transport").debug("Authentication (password) successful!")
        return remote.name

    assert play.each([play.inventory.host("alpha")], work) == {"alpha": "alpha"}
    assert capsys.readouterr().err.splitlines() == [f"{'ssh':<12} {'alpha':<10} Authentication (password) successful!"]
