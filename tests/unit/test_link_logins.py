"""pitunnel/link.py's brand-new logins and the waits it hands on, against the loopback sshd (tests/unit/sshd_fake.py):
a key proved by one login of its own, a login whose `true` fails proving nothing, the session and tunnel waits
bounded by the host's settings, a changed host key the user vouched for found among the host's other keys, and
a closed link's connection really closed."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Any

import paramiko
import pytest

from pitunnel import hostkeys
from pitunnel import link as link_module
from pitunnel.inventory import PiSpec, load_inventory
from pitunnel.link import Unanswered
from pitunnel.remote import Credentials, Remote, Unreachable, remotes_for
from tests.unit.sshd_fake import FakeSshd
from tests.unit.test_remote import KEY, OTHER, line, remote, sshd  # noqa: F401  (sshd: a fixture)
from tests.unit.test_sshconf import vps_and_pi  # noqa: F401  (a fixture)


@pytest.fixture
def known(sshd: FakeSshd, tmp_path: Path) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(line(sshd.port, KEY))
    return path


@pytest.fixture
def key_file(sshd: FakeSshd, tmp_path: Path) -> Path:
    """A key file the host lets in."""
    key = paramiko.ECDSAKey.generate()
    path = tmp_path / "id_new"
    key.write_private_key_file(str(path))
    sshd.client_key = key
    return path


def test_a_key_that_lets_us_in_is_proved_by_one_login_and_one_true(sshd: FakeSshd, known: Path,
                                                                     key_file: Path) -> None:
    assert remote(sshd.port, known).proves_key(key_file, within=5) is None
    assert sshd.commands == ["true"] and len(sshd.users) == 1  # proved at once: no more logins while time is left


def test_a_login_whose_true_fails_proves_nothing_and_says_how_it_exited(sshd: FakeSshd, known: Path, key_file: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real = sshd._run  # run as ever (a real sh), then exit 1: a host where `true` fails
    monkeypatch.setattr(sshd, "_run", lambda command, stdin: (1, *real(command, stdin)[1:]))
    host = remote(sshd.port, known)
    assert host.proves_key(key_file, within=0) == "h1: `true` exited 1"
    assert not host.can_log_in_fresh(within=0)
    assert sshd.commands == ["true", "true"]  # each logged in, then `true` failed


def test_a_fresh_login_never_waits_unbounded_for_its_session(sshd: FakeSshd, known: Path, key_file: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that takes the login and never opens the session must not hang the run (paramiko's own wait is
    an hour): the session of each fresh login, and of each run, is asked for with a bound."""
    asked: list[float | None] = []
    real = paramiko.Transport.open_session

    def recorded(self: paramiko.Transport, window_size: int | None = None, max_packet_size: int | None = None,
                 timeout: float | None = None) -> paramiko.Channel:
        asked.append(timeout)
        return real(self, window_size, max_packet_size, timeout)

    monkeypatch.setattr(paramiko.Transport, "open_session", recorded)
    host = remote(sshd.port, known)
    assert host.can_log_in_fresh(within=0) and host.proves_key(key_file, within=0) is None
    assert host.run("true", sudo=False).ok  # and a run's session on the connection held
    assert len(asked) == 3 and all(t is not None and 0 < t <= 30 for t in asked), asked
    host.close()


def test_a_login_refused_other_than_source_by_source_says_so_with_what_to_do(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """paramiko may refuse a login without the list of what was tried (an AuthenticationException that is not an
    AuthFailure): the run still says where, that the login was refused, and how to log in."""
    def refused(self: object) -> None:
        raise paramiko.AuthenticationException("Authentication failed.")

    monkeypatch.setattr(link_module.Connection, "open", refused)
    with socket.create_server(("127.0.0.1", 0)) as server, pytest.raises(link_module.LoginRefused) as caught:
        port = server.getsockname()[1]
        remote(port, tmp_path / "known_hosts", user="admin").connection()
    assert str(caught.value) == (f"admin@127.0.0.1:{port}: login refused (load your key into ssh-agent, or set key "
                                 "(or password_file, or --prompt-for-login-password))")


def test_closing_a_link_closes_its_connection_and_the_next_use_opens_another(sshd: FakeSshd, known: Path) -> None:
    host = remote(sshd.port, known)
    assert host.run("echo one", sudo=False).stdout == "one\n"
    conn = host.connection()
    assert conn.is_connected
    host.close()
    assert not conn.is_connected  # the host sees the session end, not a connection left open for the run
    assert host.run("echo two", sudo=False).stdout == "two\n" and host.connection() is not conn
    host.close()


def test_a_changed_key_vouched_for_by_the_fingerprint_of_another_of_its_types_is_asked_of_the_host_itself(
        sshd: FakeSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host shows the key of the type known_hosts had (changed); the user read the fingerprint of its other
    key on the console: pitunnel asks the host's own address and port for that key, within the host's
    connect_timeout, records it and logs in with it."""
    other_type = paramiko.ECDSAKey.generate(bits=384)
    sshd.other_host_keys = [other_type]
    known = tmp_path / "known_hosts"
    known.write_text(line(sshd.port, OTHER))  # the old key, of the type the host shows first
    asked: list[tuple[Any, ...]] = []
    real = hostkeys.offered

    def recorded(*args: Any) -> paramiko.PKey | None:
        asked.append(args)
        return real(*args)

    monkeypatch.setattr(hostkeys, "offered", recorded)
    host = Remote(dataclasses.replace(remote(sshd.port, known).spec, connect_timeout=4), known, Credentials("login"),
                  accept_changed_host_key=hostkeys.fingerprint(other_type))
    assert host.run("echo taken", sudo=False).stdout == "taken\n"
    assert asked == [("127.0.0.1", sshd.port, hostkeys.fingerprint(other_type), 4)]
    assert known.read_text() == line(sshd.port, other_type)
    host.close()


def test_the_tunnel_through_the_vps_is_opened_within_the_pis_connect_timeout(
        vps_and_pi: tuple[FakeSshd, FakeSshd, Remote, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A VPS that never answers the channel to the Pi's tunnel must not hang the run: the channel is asked for
    with the Pi's connect_timeout."""
    _, pi_sshd, pi_remote, _ = vps_and_pi
    waits: list[tuple[str, int, float]] = []
    real = link_module.channel

    def recorded(conn: Any, host: str, port: int, timeout: float, where: str, **kw: Any) -> paramiko.Channel:
        waits.append((host, port, timeout))
        return real(conn, host, port, timeout, where, **kw)

    monkeypatch.setattr(link_module, "channel", recorded)
    spec = pi_remote.spec
    assert isinstance(spec, PiSpec)
    tunnelled = dataclasses.replace(pi_remote, spec=dataclasses.replace(spec, via="tunnel", connect_timeout=3),
                                    _conn=None, path=None)
    assert tunnelled.run("echo through", sudo=False).stdout == "through\n"
    assert waits == [("127.0.0.1", pi_sshd.port, 3)]
    tunnelled.close()


def test_the_hosts_of_one_run_share_its_memory_of_the_jump_hosts_out_of_reach(tmp_path: Path) -> None:
    """Every Remote remotes_for makes shares the run's Unanswered: a jump host that does not answer is dialled
    once, and every host behind it fails at once with its reason."""
    with socket.socket() as silent:  # takes connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        (tmp_path / "ssh_config").write_text(f"Host pi*\n    ProxyJump jumpy\nHost jumpy\n    HostName 127.0.0.1\n"
                                             f"    Port {silent.getsockname()[1]}\n    User hopper\n")
        (tmp_path / "hosts.yml").write_text(
            "settings: {ssh_config: ssh_config}\ndefaults: {connect_timeout: 1}\nvps: {main: {address: 203.0.113.10}}\n"
            "pis: {pi1: {address: pi1}, pi2: {address: pi2}}\n")
        remotes = remotes_for(load_inventory(tmp_path / "hosts.yml"), {n: Credentials() for n in ("main", "pi1", "pi2")},
                              accept_new=False)
        assert isinstance(remotes["pi1"].unanswered, Unanswered)
        assert remotes["pi1"].unanswered is remotes["pi2"].unanswered is remotes["main"].unanswered
        with pytest.raises(Unreachable) as first:
            remotes["pi1"].connection()
        silent.setblocking(False)
        silent.accept()[0].close()  # the one dial
        with pytest.raises(Unreachable) as second:
            remotes["pi2"].connection()
        assert str(second.value) == str(first.value) and "hopper@127.0.0.1" in str(first.value)
        with pytest.raises(BlockingIOError):
            silent.accept()  # pi2 did not dial it again
