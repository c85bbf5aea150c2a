"""Connecting as ssh does, without the network: which setting wins (inventory, ssh config, default) and says
so, ProxyJump hops, the inventory's new keys; key files read once per run (one passphrase prompt, or a clear
line with no terminal); and logins against a loopback sshd with a real ssh-agent and a passphrase key."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from pitunnel import remote as remote_module
from pitunnel import sshconf
from pitunnel.hostkeys import HostKeyRefused
from pitunnel.inventory import InventoryError, PiSpec, TunnelSpec, load_inventory
from pitunnel.remote import Credentials, Remote, Unreachable
from pitunnel.sshauth import KeyRing, NoTerminal
from pitunnel.sshconf import DEFAULT, INVENTORY, SSH_CONFIG, BadSshConfig, parse_jump, resolve
from tests.unit.sshd_fake import FakeSshd

CONFIG = """
Host mypi
    HostName 192.168.1.20
    User alice
    Port 2222
    IdentityFile /keys/config_key
    ProxyJump jumpy
Host jumpy
    HostName 203.0.113.5
    User hopper
    Port 2200
    IdentityFile /keys/jump_key
    IdentitiesOnly yes
Host only
    IdentitiesOnly yes
Host aliased
    HostKeyAlias pi-home
Host loop1
    ProxyJump loop2
Host loop2
    ProxyJump loop1
Host badport
    Port 99999
Host viacommand
    ProxyCommand nc -X connect -x proxy:3128 %h %p
"""


def pi(address: str = "mypi", *, given: frozenset[str] = frozenset({"address"}), **changes: object) -> PiSpec:
    spec = PiSpec(name="pi1", role="pi", address=address, port=22, user="pi", key=None, password_file=None,
                  sudo_password_file=None, host_key=None, connect_timeout=5, vpses=("main",), given=given)
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


@pytest.fixture
def config() -> paramiko.SSHConfig:
    return paramiko.SSHConfig.from_text(CONFIG)


# ------------------------------------------------------------------------------------------ who wins


def test_without_an_ssh_config_the_inventory_and_defaults_alone_decide() -> None:
    route = resolve(pi("10.0.0.5", user="pi"), None)
    t = route.target
    assert (t.hostname, t.port, t.user, route.jumps) == ("10.0.0.5", 22, "pi", ())
    assert dict(t.sources) == {"hostname": INVENTORY, "port": DEFAULT, "user": DEFAULT}
    assert [i.source for i in t.identities] == [DEFAULT] * 3  # ~/.ssh/id_rsa, id_ecdsa, id_ed25519, as ssh
    assert [i.path.name for i in t.identities] == ["id_rsa", "id_ecdsa", "id_ed25519"]
    assert t.known_name == "10.0.0.5"


def test_the_ssh_config_fills_what_the_inventory_leaves_out(config: paramiko.SSHConfig) -> None:
    route = resolve(pi(), config)
    t = route.target
    assert (t.hostname, t.port, t.user) == ("192.168.1.20", 2222, "alice")
    assert dict(t.sources) == {"hostname": SSH_CONFIG, "port": SSH_CONFIG, "user": SSH_CONFIG}
    assert [(str(i.path), i.source) for i in t.identities] == [("/keys/config_key", SSH_CONFIG)]  # no defaults then
    assert t.known_name == "[192.168.1.20]:2222"  # filed as ssh files it: the real name, not the alias


def test_the_inventory_wins_where_both_say_something(config: paramiko.SSHConfig, tmp_path: Path) -> None:
    key = tmp_path / "inv_key"
    spec = pi(given=frozenset({"address", "user", "port", "key"}), user="bob", port=22, key=key)
    t = resolve(spec, config).target
    assert (t.hostname, t.port, t.user) == ("192.168.1.20", 22, "bob")  # HostName still applies to the alias
    assert dict(t.sources) == {"hostname": SSH_CONFIG, "port": INVENTORY, "user": INVENTORY}
    assert [(i.path, i.source) for i in t.identities] == [(key, INVENTORY), (Path("/keys/config_key"), SSH_CONFIG)]


def test_proxyjump_hops_are_resolved_with_their_own_settings(config: paramiko.SSHConfig) -> None:
    route = resolve(pi(), config)
    (hop,) = route.jumps
    assert (hop.alias, hop.hostname, hop.port, hop.user, hop.identities_only) == ("jumpy", "203.0.113.5", 2200,
                                                                                    "hopper", True)
    assert [str(i.path) for i in hop.identities] == ["/keys/jump_key"]
    assert route.jump_source == SSH_CONFIG
    lines = route.describe()
    assert "hostname 192.168.1.20 (ssh_config)" in lines and "user alice (ssh_config)" in lines
    assert any(line.startswith("jump jumpy: hostname 203.0.113.5") and "(ssh_config ProxyJump)" in line
               for line in lines)


def test_identities_only_and_host_key_alias(config: paramiko.SSHConfig) -> None:
    only = resolve(pi("only"), config).target
    assert only.identities_only and only.identities == ()  # no ~/.ssh/id_* behind the user's back
    assert resolve(pi("aliased"), config).target.known_name == "pi-home"
    assert "HostKeyAlias" in " ".join(resolve(pi("aliased"), config).describe())


def test_a_loop_or_a_bad_port_in_the_ssh_config_is_one_clear_error(config: paramiko.SSHConfig) -> None:
    with pytest.raises(BadSshConfig, match="more than 8 hops"):
        resolve(pi("loop1"), config)
    with pytest.raises(BadSshConfig, match="port '99999'"):
        resolve(pi("badport"), config)
    with pytest.raises(BadSshConfig, match="gives viacommand a ProxyCommand, which pitunnel does not run"):
        resolve(pi("viacommand"), config)  # never around the user's proxy


@pytest.mark.parametrize("entry, parsed", [
    ("host", (None, "host", None)), ("me@host", ("me", "host", None)), ("me@host:2200", ("me", "host", 2200)),
    ("[2001:db8::1]:22", (None, "2001:db8::1", 22)), ("ssh://me@h:23", ("me", "h", 23)),
])
def test_parse_jump(entry: str, parsed: tuple[str | None, str, int | None]) -> None:
    assert parse_jump(entry) == parsed


def test_the_pis_ssh_tunnel_prefers_its_sshd_port_and_loopback() -> None:
    def tunnel(name: str, local: int, public: bool, kind: str = "ssh") -> TunnelSpec:
        return TunnelSpec(name=name, kind=kind, local_port=local, remote_port=20000 + local, public=public,
                          server_name=None, path=None, basic_auth_file=None)
    assert pi(tunnels=(tunnel("web", 80, False, "http"),)).first_path.ssh_tunnel is None
    both = pi(tunnels=(tunnel("pub", 22, True), tunnel("priv", 22, False), tunnel("other", 2222, False))).first_path
    assert both.ssh_tunnel is not None and both.ssh_tunnel.name == "priv"
    assert pi(tunnels=(tunnel("other", 2222, True),)).first_path.ssh_tunnel.name == "other"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ the inventory


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(text)
    return path


VPS = "vps: {main: {address: 203.0.113.10}}\n"


def test_inventory_via_ssh_config_and_given_keys(tmp_path: Path) -> None:
    (tmp_path / "ssh_config").write_text(CONFIG)
    inv = load_inventory(write(tmp_path, "settings: {ssh_config: ssh_config}\ndefaults: {user: pi}\n" + VPS +
                               "pis: {pi1: {address: mypi, via: tunnel, tunnels: {ssh: {type: ssh}}}}\n"))
    spec = inv.pis["pi1"]
    assert inv.settings.ssh_config == tmp_path / "ssh_config" and spec.via == "tunnel"
    assert spec.given == {"address", "via", "user", "tunnels"} and inv.vps["main"].given == {"address", "user"}
    off = load_inventory(write(tmp_path, "settings: {ssh_config: none}\n" + VPS + "pis: {pi1: {address: a}}\n"))
    assert off.settings.ssh_config is None and off.pis["pi1"].via == "auto"


@pytest.mark.parametrize("text, message", [
    ("pis: {pi1: {address: a, via: tunnel}}\n", r"hosts.yml:\d+:\d+: pis.pi1.via: 'via: tunnel' needs an ssh tunnel"),
    ("defaults: {via: tunnel}\npis: {pi1: {address: a}}\n", r"defaults.via: 'via: tunnel' needs an ssh tunnel on pi1"),
    ("pis: {pi1: {address: a, via: jump}}\n", r"pis.pi1.via: 'jump' \(a string\) is not allowed. Fix: use one of: auto, direct, tunnel"),
    ("settings: {ssh_config: nowhere}\n", r"settings.ssh_config: file .*nowhere does not exist"),
])
def test_inventory_refuses_bad_new_keys_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        load_inventory(write(tmp_path, VPS + text))


# ------------------------------------------------------------------------------------------ key files


def keyfile(tmp_path: Path, name: str, passphrase: str) -> Path:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f", str(path)], check=True)
    return path


needs_ssh = pytest.mark.skipif(shutil.which("ssh-keygen") is None or shutil.which("ssh-agent") is None,
                               reason="needs openssh-client (ssh-keygen, ssh-agent)")


@needs_ssh
def test_a_passphrase_is_asked_once_per_key_per_run_whatever_the_hosts(tmp_path: Path) -> None:
    key = keyfile(tmp_path, "k", "right horse")
    answers = iter(["wrong", "right horse"])
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    ring = KeyRing(ask=ask, terminal=lambda: True)
    got = []
    threads = [threading.Thread(target=lambda: got.append(ring.key(key))) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert prompts == [f"Passphrase for key {key}: "] * 2  # one wrong answer, asked again, then never
    assert len(got) == 5 and len({k.get_base64() for k in got}) == 1


@needs_ssh
def test_no_terminal_says_to_load_the_key_into_the_agent(tmp_path: Path) -> None:
    key = keyfile(tmp_path, "k", "secret words")
    ring = KeyRing(ask=lambda p: pytest.fail("asked without a terminal"), terminal=lambda: False)
    with pytest.raises(NoTerminal) as exc:
        ring.key(key)
    assert str(exc.value) == (f"key {key} is protected by a passphrase and there is no terminal to ask for it: "
                              f"load it into ssh-agent (ssh-add {key}) and run again")
    with pytest.raises(NoTerminal):
        ring.key(key)  # remembered: not tried again in this run


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            threading.Event().wait(0.05)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.fixture
def sshd() -> Iterator[FakeSshd]:
    server = FakeSshd(paramiko.ECDSAKey.generate())
    yield server
    server.close()


def known(tmp_path: Path, sshd: FakeSshd) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key.get_name()} {sshd.host_key.get_base64()}\n")
    return path


def login(tmp_path: Path, sshd: FakeSshd, key: Path | None, ring: KeyRing) -> Remote:
    spec = pi("127.0.0.1", port=sshd.port, key=key, given=frozenset({"address", "port", "key"}))
    return Remote(spec, known(tmp_path, sshd), Credentials(), keys=ring)


@needs_ssh
def test_the_agents_key_logs_in_with_no_prompt_and_no_key_file(tmp_path: Path, sshd: FakeSshd,
                                                                agent: Path) -> None:
    key = keyfile(tmp_path, "k", "agent only")
    sshd.client_key = paramiko.PKey.from_path(key, password=b"agent only")  # type: ignore[arg-type]
    _ssh_add(key, "agent only")
    ring = KeyRing(ask=lambda p: pytest.fail("asked although the agent holds the key"), terminal=lambda: True)
    assert login(tmp_path, sshd, None, ring).run("echo in", sudo=False).stdout == "in\n"
    assert login(tmp_path, sshd, key, ring).run("echo in", sudo=False).stdout == "in\n"  # the file is not opened


@needs_ssh
def test_a_key_proof_opens_the_key_file_itself_even_when_the_agent_holds_it(tmp_path: Path, sshd: FakeSshd,
                                                                             agent: Path) -> None:
    """Proving a key (before the old one is dropped) proves the file: its passphrase is asked for and the file's
    key offered, never the agent's copy, which a later run without that agent would not have."""
    key = keyfile(tmp_path, "k", "file pass")
    sshd.client_key = paramiko.PKey.from_path(key, password=b"file pass")  # type: ignore[arg-type]
    _ssh_add(key, "file pass")
    prompts: list[str] = []
    ring = KeyRing(ask=lambda p: prompts.append(p) or "file pass", terminal=lambda: True)  # type: ignore[func-returns-value]
    assert login(tmp_path, sshd, None, ring).proves_key(key, within=5) is None
    assert prompts == [f"Passphrase for key {key}: "] and sshd.commands == ["true"]


@needs_ssh
def test_a_passphrase_key_file_logs_in_after_one_prompt_and_refusal_says_what_was_tried(
        tmp_path: Path, sshd: FakeSshd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    key = keyfile(tmp_path, "k", "file pass")
    sshd.client_key = paramiko.PKey.from_path(key, password=b"file pass")  # type: ignore[arg-type]
    prompts: list[str] = []
    ring = KeyRing(ask=lambda p: prompts.append(p) or "file pass", terminal=lambda: True)  # type: ignore[func-returns-value]
    for _ in range(2):
        assert login(tmp_path, sshd, key, ring).run("echo in", sudo=False).stdout == "in\n"
    assert len(prompts) == 1
    other = keyfile(tmp_path, "other", "")
    with pytest.raises(Unreachable, match=rf"login refused \(tried {other}; .*load your key into ssh-agent"):
        login(tmp_path, sshd, other, ring).run("true")
    dark = KeyRing(terminal=lambda: False)
    with pytest.raises(Unreachable, match=rf"^key {key} is protected by a passphrase and there is no terminal"):
        login(tmp_path, sshd, key, dark).run("true")


def _ssh_add(key: Path, passphrase: str) -> None:
    """Load `key` into the agent at $SSH_AUTH_SOCK, its passphrase given by an askpass script (ssh-add reads
    no passphrase from a pipe)."""
    askpass = key.with_name("askpass.sh")
    askpass.write_text(f"#!/bin/sh\necho '{passphrase}'\n")
    askpass.chmod(0o700)
    subprocess.run(["ssh-add", "-q", str(key)], check=True, stdin=subprocess.DEVNULL, capture_output=True,
                   env={**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force",
                        "DISPLAY": ":0"})


def test_describe_says_how_each_via_reaches_the_pi(tmp_path: Path) -> None:
    ssh = TunnelSpec(name="ssh", kind="ssh", local_port=22, remote_port=20001, public=False, server_name=None,
                     path=None, basic_auth_file=None)
    vps = Remote(pi("203.0.113.10"), tmp_path / "kh")
    for via, given, says in [
            ("auto", frozenset({"address"}), "via auto (default): its address, else through main to its tunnel at "
                                             "127.0.0.1:20001"),
            ("tunnel", frozenset({"address", "via"}), "via tunnel (inventory): through main to its tunnel at "
                                                      "127.0.0.1:20001"),
            ("direct", frozenset({"address", "via"}), "via direct (inventory): its address only")]:
        remote = Remote(pi("10.0.0.5", via=via, given=given, tunnels=(ssh,)), tmp_path / "kh", gateway=vps)
        assert remote.describe()[-1] == says
        assert remote.via == via and remote.through_tunnel == (via == "tunnel")
    lonely = Remote(pi("10.0.0.5", via="tunnel"), tmp_path / "kh", gateway=vps)
    assert lonely.via == "direct" and lonely.describe()[-1].endswith("its address only, as it has no ssh tunnel")


# ------------------------------------------------------------------------------------------ the tunnel path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def vps_and_pi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeSshd, FakeSshd, Remote, Path]]:
    """A "VPS" that forwards (as sshd does for -J) and a "Pi" whose sshd its tunnel reaches at 127.0.0.1:PORT
    there, while the Pi's own address (127.0.0.1 on a port where nothing listens) refuses."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    vps_sshd, pi_sshd = FakeSshd(paramiko.ECDSAKey.generate()), FakeSshd(paramiko.ECDSAKey.generate())
    vps_sshd.forwarding = True
    home = free_port()
    tunnel = TunnelSpec(name="ssh", kind="ssh", local_port=home, remote_port=pi_sshd.port, public=False,
                        server_name=None, path=None, basic_auth_file=None)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{vps_sshd.port} {vps_sshd.host_key.get_name()} {vps_sshd.host_key.get_base64()}\n"
                     f"[127.0.0.1]:{home} {pi_sshd.host_key.get_name()} {pi_sshd.host_key.get_base64()}\n")
    vps = Remote(pi("127.0.0.1", port=vps_sshd.port, given=frozenset({"address", "port"}), name="main"), known,
                 Credentials("login"))
    remote = Remote(pi("127.0.0.1", port=home, tunnels=(tunnel,), given=frozenset({"address", "port"})), known,
                    Credentials("login"), gateway=vps)
    try:
        yield vps_sshd, pi_sshd, remote, known
    finally:
        remote.close()
        vps.close()
        vps_sshd.close()
        pi_sshd.close()


def test_auto_falls_back_to_the_tunnel_and_keeps_that_path(vps_and_pi: tuple[FakeSshd, FakeSshd, Remote, Path]) -> None:
    vps_sshd, pi_sshd, remote, _ = vps_and_pi
    notes: list[str] = []
    remote.notify = notes.append
    assert remote.run("echo through", sudo=False).stdout == "through\n"
    assert pi_sshd.commands and remote.path == "tunnel" and remote.through_tunnel
    assert len(notes) == 1 and notes[0].endswith(": reached through main's tunnel instead")
    assert remote.can_log_in_fresh(within=0)  # a fresh login takes the same path, without asking again
    assert len(notes) == 1


def test_the_pis_key_is_checked_under_its_own_name_not_the_tunnels_port(
        vps_and_pi: tuple[FakeSshd, FakeSshd, Remote, Path]) -> None:
    vps_sshd, pi_sshd, remote, known = vps_and_pi
    lines = known.read_text().splitlines()
    # the right key filed under the tunnel's loopback port counts for nothing; another under the Pi's name: refused
    other = paramiko.ECDSAKey.generate()
    known.write_text(f"{lines[0]}\n[127.0.0.1]:{pi_sshd.port} {pi_sshd.host_key.get_name()} "
                     f"{pi_sshd.host_key.get_base64()}\n{lines[1].split()[0]} {other.get_name()} {other.get_base64()}\n")
    with pytest.raises(HostKeyRefused, match=rf"through main's tunnel CHANGED.*\(known as \[127.0.0.1\]:\d+\)"):
        remote.run("true", sudo=False)
    assert pi_sshd.commands == []


def test_via_tunnel_never_tries_the_address_and_a_missing_tunnel_says_so(
        vps_and_pi: tuple[FakeSshd, FakeSshd, Remote, Path]) -> None:
    vps_sshd, pi_sshd, remote, known = vps_and_pi
    tunnel_only = dataclasses.replace(remote, spec=dataclasses.replace(remote.spec, via="tunnel"))
    assert tunnel_only.run("echo t", sudo=False).stdout == "t\n"
    down = dataclasses.replace(remote.spec.tunnels[0], remote_port=free_port())  # nothing listens there
    spec = dataclasses.replace(remote.spec, tunnels=(down,))
    broken = dataclasses.replace(remote, spec=dataclasses.replace(spec, via="tunnel"), _conn=None, path=None)
    with pytest.raises(Unreachable, match=r"pi1 through main's tunnel \(127.0.0.1:\d+ there\): Connect failed; is the tunnel up\?"):
        broken.run("true", sudo=False)
    with pytest.raises(Unreachable, match=r"pi@127.0.0.1:\d+: connection refused: nothing listens .*; and pi1 through main's tunnel"):
        dataclasses.replace(remote, spec=spec, _conn=None, path=None).run("true", sudo=False)


def test_an_ssh_config_may_not_move_a_vps_its_pis_connect_to(tmp_path: Path) -> None:
    (tmp_path / "ssh_config").write_text("Host myvps\n    HostName 203.0.113.10\n    Port 2222\nHost *\n    User me\n")
    path = write(tmp_path, "settings: {ssh_config: ssh_config}\nvps: {main: {address: myvps}}\n"
                           "pis: {pi1: {address: 10.0.0.5}}\n")
    with pytest.raises(BadSshConfig, match=r"gives the VPS main hostname 203.0.113.10 and port 2222, but its Pis' "
                                           r"tunnels connect to the inventory's address and port \(myvps:22\)"):
        remote_module.remotes_for(load_inventory(path), {"main": Credentials(), "pi1": Credentials()},
                                  accept_new=False)
    path.write_text("settings: {ssh_config: ssh_config}\nvps: {main: {address: 203.0.113.10, port: 2222}}\n"
                    "pis: {pi1: {address: 10.0.0.5}}\n")
    remotes = remote_module.remotes_for(load_inventory(path), {"main": Credentials(), "pi1": Credentials()},
                                        accept_new=False)
    assert remotes["main"].target.user == "me" and remotes["pi1"].target.user == "me"  # Host *: who, not where
    assert remotes["pi1"].gateway is remotes["main"] and remotes["pi1"].keys is remotes["main"].keys


def test_auto_goes_around_another_host_at_the_pis_address_and_tells_it_nothing(
        vps_and_pi: tuple[FakeSshd, FakeSshd, Remote, Path]) -> None:
    vps_sshd, pi_sshd, remote, known = vps_and_pi
    impostor = FakeSshd(paramiko.ECDSAKey.generate())  # away from home, the Pi's LAN address is someone else
    try:
        spec = dataclasses.replace(remote.spec, port=impostor.port)
        known.write_text(known.read_text() + f"[127.0.0.1]:{impostor.port} {pi_sshd.host_key.get_name()} "
                                              f"{pi_sshd.host_key.get_base64()}\n")
        notes: list[str] = []
        moved = dataclasses.replace(remote, spec=spec, route=None, _conn=None, path=None, notify=notes.append)
        assert moved.run("echo mine", sudo=False).stdout == "mine\n" and moved.path == "tunnel"
        assert impostor.users == [] and impostor.commands == []  # no login, not even a user name, went there
        assert "CHANGED" in notes[0] and notes[0].endswith("reached through main's tunnel instead")
        moved.close()
    finally:
        impostor.close()


def test_auto_does_not_go_around_a_refused_login(vps_and_pi: tuple[FakeSshd, FakeSshd, Remote, Path]) -> None:
    vps_sshd, pi_sshd, remote, known = vps_and_pi
    here = dataclasses.replace(remote.spec, port=pi_sshd.port)  # the Pi answers at its address...
    known.write_text(known.read_text() + f"[127.0.0.1]:{pi_sshd.port} {pi_sshd.host_key.get_name()} "
                                          f"{pi_sshd.host_key.get_base64()}\n")
    refused = dataclasses.replace(remote, spec=here, route=None, _conn=None, credentials=Credentials("wrong"))
    with pytest.raises(Unreachable, match=r"login refused") as exc:  # ...and says no: the tunnel would say the same
        refused.run("true", sudo=False)
    assert "tunnel" not in str(exc.value) and refused.path is None


# ---------------------------------------------------------------------------------------------- Include


def ssh_g(config: Path, host: str) -> dict[str, str]:
    """What OpenSSH itself makes of `host` under `config` (`ssh -G`: it connects nowhere)."""
    done = subprocess.run(["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return dict(line.split(" ", 1) for line in reversed(done.stdout.splitlines()) if " " in line)


def as_pitunnel_reads_it(config: Path, host: str) -> dict[str, str]:
    import getpass
    found = sshconf.load(config).lookup(host)  # type: ignore[union-attr]
    return {"hostname": found.get("hostname", host), "port": str(found.get("port", 22)),
            "user": found.get("user", getpass.getuser()), "identityfile": " ".join(found.get("identityfile", []))}


INCLUDES = {  # name -> (the main file, the other files): Include written the ways OpenSSH takes
    "glob, sorted, first value wins": ("Include {d}/conf.d/*.conf\nHost a\n  Port 2201\nHost *\n  User main\n", {
        "conf.d/20-b.conf": "Host b\n  HostName 10.0.0.2\n  Port 2202\n",
        "conf.d/10-a.conf": "Host a\n  HostName 10.0.0.1\n  User alice\n  IdentityFile {d}/k_a\n",
        "conf.d/10-a.conf.bak": "Host a\n  HostName 10.9.9.9\n",  # not *.conf: not included
        "conf.d/30-all.conf": "Host *\n  Port 2299\n"}),
    "after the include, the main file's top level again": (
        "User early\nInclude {d}/x\nPort 2300\nHost b\n  User bob\n", {
            "x": "Host b\n  HostName 10.0.0.2\nHost zzz\n  User only-zzz\n"}),
    "nested, '=' and quotes, a missing file": (
        "Include = \"{d}/with space\" {d}/none-such*\nHost *\n  User u\n", {
            "with space": "Include {d}/inner\nHost a b\n  Port 2400\n",
            "inner": "Host b\n  HostName 10.0.0.22\n  User inner\n"}),
    "under Host * and Match all": ("Host *\nInclude {d}/x\nMatch all\nInclude {d}/y", {
        "x": "Host a\n  Port 2500\n", "y": "Host b\n  Port 2501\n  User y\n"}),
}


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")
@pytest.mark.parametrize("case", INCLUDES)
def test_include_is_followed_as_ssh_g_follows_it(tmp_path: Path, case: str) -> None:
    main, others = INCLUDES[case]
    for name, text in others.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text.format(d=tmp_path))
    config = tmp_path / "config"
    config.write_text(main.format(d=tmp_path))
    for host in ("a", "b", "zzz", "other"):
        openssh = ssh_g(config, host)
        ours = as_pitunnel_reads_it(config, host)
        wanted = {k: openssh[k] for k in ("hostname", "port", "user")}
        assert {k: ours[k] for k in wanted} == wanted, (case, host)
        if ours["identityfile"]:
            assert openssh["identityfile"] == ours["identityfile"], (case, host)


def test_an_include_that_only_some_hosts_see_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("Port 2600\n")
    inner = tmp_path / "inner"
    inner.write_text("Host pi*\n  User pi\n  Include x\n")
    config = tmp_path / "config"
    config.write_text(f"Include {inner}\n")
    with pytest.raises(BadSshConfig) as refused:
        sshconf.load(config)
    message = str(refused.value)
    assert message.startswith(f"{inner}:3: Include under a Host or Match line") and "\n" not in message
    assert "move it above the first Host line" in message
    config.write_text(f"Match host 10.*\nInclude {tmp_path}/x\n")
    with pytest.raises(BadSshConfig, match=f"^{config}:2: Include under a Host or Match line"):
        sshconf.load(config)


def test_an_include_loop_is_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(f"Host *\nInclude {config}\n")
    with pytest.raises(BadSshConfig, match=f"^{config}:2: Include nested more than 16 deep"):
        sshconf.load(config)


def test_a_relative_include_is_under_the_users_ssh_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As OpenSSH reads a user's config (the OrbStack and Colima lines are written this way)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh" / "config.d").mkdir(parents=True)
    (tmp_path / ".ssh" / "config.d" / "orbstack").write_text("Host orb\n  HostName 127.0.0.1\n  Port 32222\n")
    (tmp_path / "elsewhere").mkdir()
    config = tmp_path / "elsewhere" / "config"
    config.write_text("Include config.d/*\nInclude ~/.ssh/config.d/orbstack\n")
    route = resolve(pi("orb"), sshconf.load(config))
    assert (route.target.hostname, route.target.port) == ("127.0.0.1", 32222)
    assert route.target.sources["port"] == SSH_CONFIG


# ------------------------------------------------------------------------------------------ a new key proven alone
@needs_ssh
def test_a_new_key_is_proven_alone_never_with_the_agents_keys_or_the_password(tmp_path: Path, sshd: FakeSshd,
                                                                             agent: Path) -> None:
    old, new = keyfile(tmp_path, "old", ""), keyfile(tmp_path, "new", "")
    sshd.client_key = paramiko.PKey.from_path(old)
    _ssh_add(old, "")  # the agent holds the old key, which the host accepts; the new one it does not yet
    spec = pi("127.0.0.1", port=sshd.port, key=old, given=frozenset({"address", "port", "key"}))
    remote = Remote(spec, known(tmp_path, sshd), Credentials("login"))
    assert remote.run("echo in", sudo=False).stdout == "in\n"
    # what rotate-keys --laptop-key did before: a login "with NEW" that the agent's old key let in
    assert Remote(dataclasses.replace(spec, key=new), known(tmp_path, sshd)).can_log_in_fresh(use_password=False, within=3)
    why = remote.proves_key(new, within=3)  # a refusal is final at once; only a lost connection is tried again
    assert why is not None and re.search(rf"pi@127.0.0.1:{sshd.port}: login refused \(tried {re.escape(str(new))}; "
                                         r"offered alone: no agent, no other key, no password\)$", why), why
    sshd.client_key = paramiko.PKey.from_path(new)
    commands = len(sshd.commands)
    assert remote.proves_key(new, within=3) is None and set(sshd.commands[commands:]) == {"true"}
    other = FakeSshd(paramiko.ECDSAKey.generate())  # another host where this one's key is known: refused as always
    try:
        other.client_key = paramiko.PKey.from_path(new)
        listed = tmp_path / "other_known_hosts"
        listed.write_text(f"[127.0.0.1]:{other.port} {sshd.host_key.get_name()} {sshd.host_key.get_base64()}\n")
        refused = Remote(dataclasses.replace(spec, port=other.port), listed, Credentials("login")).proves_key(new)
        assert refused is not None and "CHANGED" in refused and other.commands == []
    finally:
        other.close()


def test_a_new_key_is_proven_by_the_pis_route_through_its_tunnel(
        vps_and_pi: tuple[FakeSshd, FakeSshd, Remote, Path], tmp_path: Path) -> None:
    vps_sshd, pi_sshd, remote, _ = vps_and_pi
    assert remote.run("echo through", sudo=False).stdout == "through\n" and remote.path == "tunnel"
    new = keyfile(tmp_path, "new", "")
    why = remote.proves_key(new, within=3)  # the Pi accepts only the password so far (refused: final at once)
    assert why is not None and "through main's tunnel: login refused" in why and "offered alone" in why, why
    pi_sshd.client_key = paramiko.PKey.from_path(new)
    commands = len(pi_sshd.commands)
    assert remote.proves_key(new, within=3) is None and set(pi_sshd.commands[commands:]) == {"true"}


# ------------------------------------------------------------------------------- exactly, line by line


def test_describe_says_each_setting_and_where_it_came_from_exactly() -> None:
    from types import MappingProxyType

    from pitunnel.sshconf import Hop, Identity, Route
    target = Hop("10.0.0.2", "10.0.0.2", 22, "pi", (), False, sources=MappingProxyType({"port": INVENTORY,
                                                                                         "user": SSH_CONFIG}))
    jump = Hop("jumpy", "203.0.113.5", 2200, "hopper", (Identity(Path("/k/a"), SSH_CONFIG), Identity(Path("/k/b"), DEFAULT)),
               True, host_key_alias="jump-home", sources=MappingProxyType({"hostname": SSH_CONFIG}))
    assert Route(target, (jump,), SSH_CONFIG).describe() == [
        "hostname 10.0.0.2 (default)", "port 22 (inventory)", "user pi (ssh_config)", "keys: ssh-agent, then none",
        "host key: 10.0.0.2 in known_hosts",
        "jump jumpy: hostname 203.0.113.5 (ssh_config), port 2200 (default), user hopper (default), keys: ssh-agent "
        "(only for these), then /k/a (ssh_config), /k/b (default), host key: jump-home in known_hosts "
        "(HostKeyAlias, ssh_config) (ssh_config ProxyJump)"]


def test_blank_lines_comments_and_bytes_that_are_not_utf8_are_read_past(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"# caf\xe9\n\nHost a\n  Port 2601\n")
    config = tmp_path / "config"
    config.write_bytes(f"# mine\n\n  # indented\nInclude {tmp_path}/x\n\nHost b\n  Port 2602\n".encode())
    assert sshconf.load(config).lookup("a")["port"] == "2601"  # type: ignore[union-attr]
    assert sshconf.load(config).lookup("b")["port"] == "2602"  # type: ignore[union-attr]


def test_the_errors_name_file_line_and_fix_exactly(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Port 22\nInclude \"unclosed\n")
    with pytest.raises(BadSshConfig) as caught:
        sshconf.load(config)
    assert str(caught.value) == f"{config}:2: unbalanced quotes"
    config.write_text("Host pi\nInclude x\n")
    with pytest.raises(BadSshConfig) as caught:
        sshconf.load(config)
    assert str(caught.value) == (f"{config}:2: Include under a Host or Match line applies only to the hosts that block "
                                 "matches, which pitunnel cannot follow: move it above the first Host line (or under "
                                 "'Host *'), or set 'ssh_config: none' in the inventory")


def test_includes_go_16_deep_as_openssh_and_no_deeper(tmp_path: Path) -> None:
    files = [tmp_path / f"f{i}" for i in range(18)]
    for here, there in zip(files, files[1:]):
        here.write_text(f"Include {there}\n")
    files[16].write_text("Port 2616\n")  # f0 includes f1 ... f16: 16 deep
    assert sshconf.load(files[0]).lookup("any")["port"] == "2616"  # type: ignore[union-attr]
    files[16].write_text(f"Include {files[17]}\n")
    files[17].write_text("Port 2617\n")
    with pytest.raises(BadSshConfig) as caught:
        sshconf.load(files[0])
    assert str(caught.value) == f"{files[16]}:1: Include nested more than 16 deep (a file that includes itself?)"


def test_a_relative_include_alone_is_read_from_the_users_ssh_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".ssh" / "config.d").mkdir(parents=True)
    (tmp_path / ".ssh" / "config.d" / "orbstack").write_text("Host orb\n  Port 32222\n")
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.d" / "orbstack").write_text("Host orb\n  Port 1\n")  # beside the working folder: not it
    config = tmp_path / "config"
    config.write_text("Include config.d/*\n")
    assert sshconf.load(config).lookup("orb")["port"] == "32222"  # type: ignore[union-attr]


def test_a_bad_proxyjump_entry_or_an_unreadable_include_is_named(tmp_path: Path) -> None:
    with pytest.raises(BadSshConfig) as caught:
        parse_jump("bob@:22")
    assert str(caught.value) == "ProxyJump entry 'bob@:22' names no host"
    with pytest.raises(BadSshConfig) as caught:
        parse_jump("[fe80::1]:99999")
    assert str(caught.value) == "the ssh config gives [fe80::1]:99999 the port '99999': use a port from 1 to 65535"
    (tmp_path / "conf.d").mkdir()
    config = tmp_path / "config"
    config.write_text(f"Include {tmp_path}/conf.d\n")  # a folder, not a file
    with pytest.raises(BadSshConfig) as caught:
        sshconf.load(config)
    assert str(caught.value) == f"{config}:1: cannot read {tmp_path}/conf.d (Include): Is a directory"


def test_three_wrong_passphrases_each_said_then_the_key_is_given_up(tmp_path: Path,
                                                                    capfd: pytest.CaptureFixture[str]) -> None:
    key = keyfile(tmp_path, "k", "right horse")
    ring = KeyRing(ask=lambda prompt: "wrong", terminal=lambda: True)
    with pytest.raises(paramiko.SSHException) as caught:
        ring.key(key)
    assert str(caught.value) == (f"key {key}: no right passphrase after 3 tries: run again and type it with care, or "
                                 f"load the key into ssh-agent once (ssh-add {key}) and run again")
    assert capfd.readouterr().err == f"wrong passphrase for key {key}\n" * 3
