"""How pitunnel/link.py opens a host's connection, against loopback fakes (tests/unit/sshd_fake.py): `via: auto`
logging in at the Pi's address as it would anywhere, the operator's own ~/.ssh/config left out of it, a
handshake that stalls given up after connect_timeout, and what a failed login says: a web server where sshd
should be (at the address the ssh config moved it to), an unknown key behind the tunnel, Ctrl-C in a jump
host's handshake."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko
import pytest

from pitunnel import sshconf
from pitunnel.dial import STOP
from pitunnel.hostkeys import HostKeyRefused
from pitunnel.link import Unanswered
from pitunnel.remote import Credentials, Remote, Unreachable
from tests.unit.sshd_fake import FakeSshd
from tests.unit.test_failures import web  # noqa: F401  (a fixture)
from tests.unit.test_remote import KEY, failure_within, line, remote, spec, sshd  # noqa: F401  (sshd: a fixture)
from tests.unit.test_sshconf import free_port, vps_and_pi  # noqa: F401  (vps_and_pi: a fixture)

Fakes = tuple[FakeSshd, FakeSshd, Remote, Path]


def at_its_address(vps_and_pi: Fakes) -> Remote:
    """The fixture's `via: auto` Pi, answering at its own address this time (its key known there too)."""
    _, pi_sshd, pi, known = vps_and_pi
    key = pi_sshd.host_key
    known.write_text(known.read_text() + f"[127.0.0.1]:{pi_sshd.port} {key.get_name()} {key.get_base64()}\n")
    return dataclasses.replace(pi, spec=dataclasses.replace(pi.spec, port=pi_sshd.port), route=None, _conn=None,
                               path=None)


def test_auto_logs_in_at_the_pis_address_with_its_password_and_keeps_that_path(vps_and_pi: Fakes) -> None:
    vps_sshd, pi_sshd, _, _ = vps_and_pi
    here = at_its_address(vps_and_pi)
    assert here.via == "auto"
    assert here.run("echo here", sudo=False).stdout == "here\n"  # the password, as at any address
    assert here.path == "direct" and not here.through_tunnel and pi_sshd.users == ["pi"]
    assert vps_sshd.forwarded == []  # the tunnel was never asked for
    here.close()


def test_auto_proves_a_key_at_the_pis_address_with_that_key_alone(vps_and_pi: Fakes, tmp_path: Path) -> None:
    """The key proof's first try, at the Pi's address, offers the key file: the host lets it in, so it is
    proved there (the login password, which would have let us in too, is not what was proved)."""
    vps_sshd, pi_sshd, _, _ = vps_and_pi
    key = paramiko.ECDSAKey.generate()
    key.write_private_key_file(str(tmp_path / "id_new"))
    pi_sshd.client_key = key
    assert at_its_address(vps_and_pi).proves_key(tmp_path / "id_new", within=0) is None
    assert pi_sshd.commands == ["true"] and vps_sshd.forwarded == []


def test_an_unknown_key_behind_the_tunnel_says_which_way_it_was_met(vps_and_pi: Fakes) -> None:
    """Through the tunnel, the unknown-key refusal starts with the login and the way (the VPS's tunnel): the
    same key seen at the Pi's address is another matter."""
    _, pi_sshd, pi, known = vps_and_pi
    known.write_text(known.read_text().splitlines()[0] + "\n")  # the VPS's key only
    tunnel_only = dataclasses.replace(pi, spec=dataclasses.replace(pi.spec, via="tunnel"))
    port = pi.spec.port
    with pytest.raises(HostKeyRefused) as refused:
        tunnel_only.run("true", sudo=False)
    assert str(refused.value).startswith(
        f"pi@127.0.0.1:{port} through main's tunnel: unknown host key for [127.0.0.1]:{port}: "), refused.value
    assert pi_sshd.users == []


def test_the_operators_own_ssh_config_plays_no_part(sshd: FakeSshd, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the ssh config the inventory names is read (sshconf): a ~/.ssh/config that would send every host
    elsewhere, through a proxy, as another user, changes nothing."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host *\n  HostName 192.0.2.1\n  Port 1\n  User mallory\n"
                                              "  ProxyCommand false\n  ConnectTimeout 1\n")
    known = tmp_path / "known_hosts"
    known.write_text(line(sshd.port, KEY))
    host = remote(sshd.port, known)
    assert host.run("echo mine", sudo=False).stdout == "mine\n"
    assert sshd.users == ["pi"]
    host.close()


def test_a_web_server_where_the_ssh_config_sends_us_is_named_at_that_address_and_port(web: int,  # noqa: F811
                                                                                      tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host moved\n  HostName 127.0.0.1\n  Port {web}\n")
    host = dataclasses.replace(spec(22), address="moved", given=frozenset({"address"}))
    moved = Remote(host, tmp_path / "known_hosts", Credentials("login"),
                   route=sshconf.resolve(host, sshconf.load(config)))
    with pytest.raises(Unreachable) as exc:
        moved.run("true")
    assert str(exc.value) == (f"pi@127.0.0.1:{web}: port {web} speaks HTTP, not SSH: `port:` must be the host's sshd "
                              "port (a web server answers there)")


@pytest.fixture
def greets_then_stalls() -> Iterator[int]:
    """A port that says an SSH greeting and then nothing, ever (a wedged sshd): its port."""
    held: list[socket.socket] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            client.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            held.append(client)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for client in held:  # ends a login still waiting, if any
        client.close()


def test_a_handshake_that_stalls_after_the_greeting_is_given_up_after_connect_timeout(
        greets_then_stalls: int, tmp_path: Path) -> None:
    host = Remote(dataclasses.replace(spec(greets_then_stalls), connect_timeout=1), tmp_path / "known_hosts",
                  Credentials("login"))
    failed = failure_within(host.connection, 8, "the login still waits for the handshake, long past connect_timeout (1s)")
    assert isinstance(failed, Unreachable)
    assert str(failed) == (f"pi@127.0.0.1:{greets_then_stalls}: no SSH handshake with port {greets_then_stalls} "
                              "within 1s: is it an SSH server? (check `port:`)")


@contextmanager
def ctrl_c_in_handshake() -> Iterator[socket.socket]:
    """A listener whose first client gets as far as its greeting; then Ctrl-C (STOP) and the connection cut."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def ctrl_c_then_cut() -> None:
            client, _ = listener.accept()
            client.recv(256)  # the client's greeting: its handshake has begun
            STOP.set()
            client.close()

        threading.Thread(target=ctrl_c_then_cut, daemon=True).start()
        yield listener


def test_ctrl_c_during_a_jump_hosts_handshake_says_it_was_interrupted(tmp_path: Path) -> None:
    """Ctrl-C while the jump host's handshake was under way (it ends that handshake): the failure says the run
    was interrupted, not what the cut connection looked like."""
    with ctrl_c_in_handshake() as jump:
        config = tmp_path / "ssh_config"
        config.write_text(f"Host target\n  HostName 127.0.0.1\n  Port 1\n  ProxyJump j1\n"
                          f"Host j1\n  HostName 127.0.0.1\n  Port {jump.getsockname()[1]}\n  User hopper\n")
        host = dataclasses.replace(spec(22), address="target", given=frozenset({"address"}))
        behind = Remote(host, tmp_path / "known_hosts", Credentials("login"),
                        route=sshconf.resolve(host, sshconf.load(config)))
        with pytest.raises(Unreachable) as exc:
            behind.connection()
        assert str(exc.value) == (f"hopper@127.0.0.1:{jump.getsockname()[1]} (jump host for h1): not reached: "
                                  "interrupted (Ctrl-C)")


def test_a_host_is_dialled_at_its_own_address_not_at_this_machines(sshd: FakeSshd, tmp_path: Path) -> None:
    """The inventory says 127.0.0.2 (nothing listens there): the dial goes there and fails, although an sshd
    answers on the same port at this machine's own address."""
    known = tmp_path / "known_hosts"
    known.write_text(line(sshd.port, KEY))
    elsewhere = Remote(dataclasses.replace(spec(sshd.port), address="127.0.0.2"), known, Credentials("login"))
    with pytest.raises(Unreachable, match=f"^pi@127.0.0.2:{sshd.port}: "):
        elsewhere.run("true", sudo=False)
    assert sshd.users == []


def test_a_jump_host_is_dialled_at_its_own_address_not_at_this_machines(sshd: FakeSshd, tmp_path: Path) -> None:
    """The ssh config puts the jump host at 127.0.0.2 (nothing listens there): it is dialled there and fails,
    although an sshd answers on the same port at this machine's own address."""
    config = tmp_path / "ssh_config"
    config.write_text(f"Host target\n  HostName 127.0.0.1\n  Port 1\n  ProxyJump j1\n"
                      f"Host j1\n  HostName 127.0.0.2\n  Port {sshd.port}\n  User hopper\n")
    host = dataclasses.replace(spec(22), address="target", given=frozenset({"address"}))
    behind = Remote(host, tmp_path / "known_hosts", Credentials("login"),
                    route=sshconf.resolve(host, sshconf.load(config)))
    with pytest.raises(Unreachable, match=f"^jump host hopper@127.0.0.2:{sshd.port}: "):
        behind.connection()
    assert sshd.users == []


HOP_KEY = paramiko.ECDSAKey.generate()  # what the jump hosts let in (a jump host is logged in to by key alone)


def jumping(tmp_path: Path, jumps: dict[str, int], target: int) -> dict[str, Remote]:
    """A Remote per jump host named, each reaching 127.0.0.1:`target` through it, all of one run (one Unanswered);
    each jump host logged in to as hopper with HOP_KEY."""
    HOP_KEY.write_private_key_file(str(tmp_path / "hop_key"))
    config = tmp_path / "ssh_config"
    config.write_text("".join(f"Host behind-{name}\n  HostName 127.0.0.1\n  Port {target}\n  ProxyJump {name}\n"
                              f"Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User hopper\n"
                              f"  IdentityFile {tmp_path / 'hop_key'}\n  IdentitiesOnly yes\n"
                              for name, port in jumps.items()))
    run = Unanswered()
    remotes = {}
    for name in jumps:
        host = dataclasses.replace(spec(22), name=f"behind-{name}", address=f"behind-{name}",
                                   given=frozenset({"address"}), connect_timeout=1)
        remotes[name] = Remote(host, tmp_path / "known_hosts", Credentials("login"),
                               route=sshconf.resolve(host, sshconf.load(config)), unanswered=run)
    return remotes


@pytest.fixture
def no_keys_of_the_tester(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No agent and no ~/.ssh of whoever runs the tests: a login offers what the test gives it, only."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def test_a_jump_host_out_of_reach_fails_only_the_hosts_behind_it(tmp_path: Path, no_keys_of_the_tester: None) -> None:
    """One run, two jump hosts: the one that does not answer fails the host behind it; the host behind the
    other one is still logged in to, through its own jump host."""
    jump, target = FakeSshd(paramiko.ECDSAKey.generate()), FakeSshd(KEY)
    jump.forwarding, jump.client_key = True, HOP_KEY
    (tmp_path / "known_hosts").write_text(line(jump.port, jump.host_key) + line(target.port, KEY))
    try:
        remotes = jumping(tmp_path, {"dead": free_port(), "alive": jump.port}, target.port)
        with pytest.raises(Unreachable):
            remotes["dead"].connection()
        assert remotes["alive"].run("echo through", sudo=False).stdout == "through\n"
        assert jump.users == ["hopper"] and target.users == ["pi"]
        remotes["alive"].close()
    finally:
        jump.close()
        target.close()


def test_a_jump_host_that_never_opens_the_way_on_fails_within_connect_timeout_naming_both(
        tmp_path: Path, no_keys_of_the_tester: None) -> None:
    """The jump host logs us in, then never answers the request for a channel on to the host: the run gives up
    after the host's connect_timeout (1s) and says what it could not reach, through which jump host."""
    jump, target = FakeSshd(paramiko.ECDSAKey.generate()), FakeSshd(KEY)
    jump.forwarding, jump.client_key = True, HOP_KEY
    stalled = threading.Event()

    def never_answers(chanid: int, origin: tuple[str, int], destination: tuple[str, int]) -> int:
        stalled.wait(4)
        return paramiko.OPEN_FAILED_CONNECT_FAILED

    jump.check_channel_direct_tcpip_request = never_answers  # type: ignore[method-assign]
    (tmp_path / "known_hosts").write_text(line(jump.port, jump.host_key) + line(target.port, KEY))
    try:
        behind = jumping(tmp_path, {"j1": jump.port}, target.port)["j1"]
        started = time.monotonic()
        with pytest.raises(Unreachable) as exc:
            behind.connection()
        assert time.monotonic() - started < 3
        assert str(exc.value) == f"pi@127.0.0.1:{target.port} through jump host j1: Timeout opening channel."
        assert target.users == []
    finally:
        stalled.set()
        jump.close()
        target.close()


def test_auto_meeting_another_hosts_key_at_the_address_and_no_tunnel_is_a_host_key_refusal(
        vps_and_pi: Fakes) -> None:
    """`via: auto`: someone else answers at the Pi's address (a key not known for it) and the tunnel cannot be
    opened either (the VPS forwards nothing): the failure is the host-key refusal, both reasons said."""
    vps_sshd, _, pi, _ = vps_and_pi
    stranger = FakeSshd(paramiko.ECDSAKey.generate())
    vps_sshd.forwarding = False
    try:
        there = dataclasses.replace(pi, spec=dataclasses.replace(pi.spec, port=stranger.port), route=None,
                                    _conn=None, path=None)
        with pytest.raises(HostKeyRefused) as refused:
            there.run("true", sudo=False)
        direct, _, tunnel = str(refused.value).partition("; and ")
        assert f"unknown host key for [127.0.0.1]:{stranger.port}" in direct
        assert tunnel.startswith(f"{pi.name} through main's tunnel"), tunnel
        assert stranger.users == []
    finally:
        stranger.close()


def test_ctrl_c_during_the_hosts_own_handshake_says_it_was_interrupted_naming_it(tmp_path: Path) -> None:
    """Ctrl-C while the host's handshake was under way: the failure names the host and says the run was
    interrupted."""
    with ctrl_c_in_handshake() as listener:
        port = listener.getsockname()[1]
        with pytest.raises(Unreachable) as exc:
            Remote(spec(port), tmp_path / "known_hosts", Credentials("login")).connection()
        assert str(exc.value) == f"pi@127.0.0.1:{port}: not reached: interrupted (Ctrl-C)"


def test_a_second_known_key_of_a_pi_behind_its_tunnel_is_taken_through_the_tunnel_again(vps_and_pi: Fakes) -> None:
    """known_hosts lists another key first for the Pi (as while its keys rotate): the login is tried again
    expecting the key it showed, by the same way, through the tunnel."""
    vps_sshd, pi_sshd, pi, known = vps_and_pi
    vps_line, pi_line = known.read_text().splitlines()
    other = paramiko.ECDSAKey.generate()
    known.write_text(f"{vps_line}\n{pi_line.split()[0]} {other.get_name()} {other.get_base64()}\n{pi_line}\n")
    tunnel_only = dataclasses.replace(pi, spec=dataclasses.replace(pi.spec, via="tunnel"))
    assert tunnel_only.run("echo again", sudo=False).stdout == "again\n"
    assert [d for _, d in vps_sshd.forwarded] == [("127.0.0.1", pi_sshd.port)] * 2
    tunnel_only.close()


def test_a_key_proof_tried_again_for_a_second_known_host_key_still_offers_that_key_alone(
        sshd: FakeSshd, tmp_path: Path, no_keys_of_the_tester: None) -> None:
    """The host shows the second key known_hosts lists for it, so the proof logs in again expecting it: that
    login too offers the key being proved alone, so the inventory's own key, which the host would take, does
    not prove it."""
    accepted, proved = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    accepted.write_private_key_file(str(tmp_path / "id_inventory"))
    proved.write_private_key_file(str(tmp_path / "id_new"))
    sshd.client_key = accepted
    known = tmp_path / "known_hosts"
    other = paramiko.ECDSAKey.generate()
    known.write_text(line(sshd.port, other) + line(sshd.port, KEY))
    host = remote(sshd.port, known, key=tmp_path / "id_inventory")
    why = host.proves_key(tmp_path / "id_new", within=0)
    assert why is not None and "offered alone: no agent, no other key, no password" in why, why
    assert sshd.commands == []
