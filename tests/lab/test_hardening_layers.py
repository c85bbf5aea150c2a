"""The tunnel account's two layers on the VPS (issue 11, row 11), each shown on its own with a Pi's real
tunnel key: the key options in authorized_keys (restrict, port-forwarding, permitlisten, command=)
and the sshd `Match User` block. Each test removes one layer, probes, and puts it back.

The account's shell (/usr/sbin/nologin) is a third guard against commands: sshd runs every command,
forced ones included, through it. So that the command probe shows what the layer under test does, the
one-layer tests give the account /bin/sh while they run. A control with neither layer shows every probe
can get through, so every "stopped" below is a result, not a probe that cannot succeed.
"""

from __future__ import annotations

import io
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko
import pytest
import yaml

from lab import KNOWN_HOSTS, VPS_ADDR
from pitunnel.roles.site import provision as provision_site
from tests.conftest import lab_up
from tests.lab.runs import in_host, play

pytestmark = pytest.mark.lab
VPS = str(VPS_ADDR)
DROPIN = "/etc/ssh/sshd_config.d/10-pitunnel.conf"
KEYS = "/var/lib/pitunnel/.ssh/authorized_keys"
UNIX_TARGET = "/run/systemd/journal/stdout"  # a Unix socket every account may connect to
FREE_PORT = 29999  # in no key's permitlisten
PROBES = ("command", "pty", "agent", "tcp -L/-W", "unix -L/-W", "unix -R", "tcp -R other port", "tcp -R vps address")


@pytest.fixture(scope="module")
def lab() -> dict[str, object]:
    inventory: Path = lab_up(1).inventory
    code, p = play(inventory, provision_site)
    assert code == 0, p and {h: (r.changed, r.failed) for h, r in p.reporter.recaps.items()}
    key_text = in_host("pi1", "cat /var/lib/pitunnel/.ssh/pitunnel_ed25519")
    return {
        "inventory": inventory,
        "port": yaml.safe_load(inventory.read_text())["vps"]["vps"]["port"],
        "key": paramiko.Ed25519Key.from_private_key(io.StringIO(key_text)),
        "sshd": in_host("vps", "sshd -T -C user=pitunnel,host=x,addr=192.0.2.9"),
        "keys": in_host("vps", f"cat {KEYS}"),
    }


class Transport(paramiko.Transport):
    """paramiko's Transport, able to open a `direct-streamlocal@openssh.com` channel (ssh -L/-W to a
    Unix socket): paramiko writes no target for that kind, so the path is appended here."""

    streamlocal_path: str | None = None

    def _send_user_message(self, data: paramiko.Message) -> None:
        raw = data.asbytes()
        if self.streamlocal_path is not None and raw[:1] == bytes([90]) and b"direct-streamlocal@openssh.com" in raw:
            data.add_string(self.streamlocal_path)
            data.add_string("")
            data.add_int(0)
            self.streamlocal_path = None
        super()._send_user_message(data)


def connect(lab: dict) -> Transport:
    deadline = time.monotonic() + 15
    while True:  # right after a reload sshd may refuse for a moment
        try:
            sock = socket.create_connection((VPS, lab["port"]), timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    t = Transport(sock)
    t.start_client(timeout=10)
    known = paramiko.HostKeys(str(KNOWN_HOSTS)).lookup(f"[{VPS}]:{lab['port']}") or {}
    server = t.get_remote_server_key()
    assert known.get(server.get_name()) == server, "the VPS's host key is not the lab's"
    t.auth_publickey("pitunnel", lab["key"])
    return t


def probe(lab: dict) -> dict[str, bool]:
    """Which of the probes got through (True) with the Pi's tunnel key, as the VPS is now."""
    got: dict[str, bool] = {}
    t = connect(lab)
    try:
        chan = t.open_session(timeout=10)
        chan.settimeout(10)
        chan.exec_command("id")
        got["command"] = b"uid=" in chan.makefile().read()
        chan.close()

        chan = t.open_session(timeout=10)
        try:
            chan.get_pty()
            got["pty"] = True
        except paramiko.SSHException:
            got["pty"] = False
        chan.close()

        chan = t.open_session(timeout=10)
        chan.request_forward_agent(lambda channel: channel.close())
        sockets = ""
        for _ in range(20):  # sshd makes the socket when it grants the request; the session is still open
            sockets = in_host("vps", "find /tmp -path '/tmp/ssh-*/agent.*' -user pitunnel 2>/dev/null").strip()
            if sockets:
                break
            time.sleep(0.1)
        got["agent"] = bool(sockets)
        chan.close()

        try:
            chan = t.open_channel("direct-tcpip", ("127.0.0.1", lab["port"]), ("127.0.0.1", 0), timeout=10)
            chan.settimeout(10)
            got["tcp -L/-W"] = chan.recv(64).startswith(b"SSH-2.0")  # the VPS's own sshd answered
            chan.close()
        except paramiko.SSHException:
            got["tcp -L/-W"] = False

        t.streamlocal_path = UNIX_TARGET
        try:
            t.open_channel("direct-streamlocal@openssh.com", timeout=10).close()
            got["unix -L/-W"] = True  # sshd confirms only once it is connected to the socket
        except paramiko.SSHException:
            got["unix -L/-W"] = False

        path = f"/tmp/pitunnel-probe-{uuid.uuid4().hex[:8]}.sock"
        got["unix -R"] = t.global_request("streamlocal-forward@openssh.com", (path,), wait=True) is not None
        if got["unix -R"]:
            assert in_host("vps", f"test -S {path} && echo listening").strip() == "listening"

        try:
            t.request_port_forward("127.0.0.1", FREE_PORT)
            got["tcp -R other port"] = True
        except paramiko.SSHException:
            got["tcp -R other port"] = False

        try:  # neither loopback nor every address: a Pi's tunnel never asks for that
            t.request_port_forward(VPS, FREE_PORT + 1)
            got["tcp -R vps address"] = True
        except paramiko.SSHException:
            got["tcp -R vps address"] = False
    finally:
        t.close()
        in_host("vps", "rm -f /tmp/pitunnel-probe-*.sock")
    assert set(got) == set(PROBES)
    return got


def reload_sshd() -> None:
    assert in_host("vps", "sshd -t && systemctl reload ssh && echo reloaded").strip() == "reloaded"


@contextmanager
def layers(*, match_block: bool, key_options: bool, shell: str = "/bin/sh") -> Iterator[None]:
    """The VPS with the Match block and/or the key options removed; everything put back afterwards."""
    try:
        in_host("vps", f"usermod -s {shell} pitunnel")
        if not match_block:
            in_host("vps", f"mv {DROPIN} /root/10-pitunnel.conf.off")
            reload_sshd()
            assert "forcecommand none" in in_host("vps", "sshd -T -C user=pitunnel,host=x,addr=192.0.2.9")
        if not key_options:
            in_host("vps", f"cp -p {KEYS} /root/authorized_keys.orig && "
                           f"awk '{{print $(NF-2), $(NF-1), $NF}}' /root/authorized_keys.orig > {KEYS}")
            assert in_host("vps", f"cat {KEYS}").startswith("ssh-ed25519 ")  # a bare key line
        yield
    finally:
        in_host("vps", f"test -f /root/authorized_keys.orig && mv /root/authorized_keys.orig {KEYS}; "
                       f"test -f /root/10-pitunnel.conf.off && mv /root/10-pitunnel.conf.off {DROPIN}; "
                       "usermod -s /usr/sbin/nologin pitunnel")
        reload_sshd()


def test_control_without_either_layer_every_probe_gets_through(lab: dict) -> None:
    with layers(match_block=False, key_options=False):
        got = probe(lab)
    assert got == {name: True for name in PROBES}, got


def test_key_options_alone(lab: dict) -> None:
    """Match block gone: the key still stops commands, ptys, agent forwarding and foreign -R ports, but
    not -L/-W to the VPS's own services nor Unix-socket forwards (no key option can stop those while
    `port-forwarding` is on: permitopen covers TCP -L/-W only, permitlisten TCP -R only)."""
    with layers(match_block=False, key_options=True):
        got = probe(lab)
    assert got == {"command": False, "pty": False, "agent": False, "tcp -L/-W": True, "unix -L/-W": True,
                   "unix -R": True, "tcp -R other port": False, "tcp -R vps address": False}, got


def test_match_block_alone(lab: dict) -> None:
    """A bare key line (no options): the Match block alone stops every probe but a free port on loopback. Its
    PermitListen permits any port on the addresses the tunnels use: which port is whose is the keys' own
    permitlisten (a list of every Pi's listeners there cost each session memory with its square)."""
    with layers(match_block=True, key_options=False):
        got = probe(lab)
    assert got == {**{name: False for name in PROBES}, "tcp -R other port": True}, got


def test_as_provisioned_nothing_gets_through(lab: dict) -> None:
    with layers(match_block=True, key_options=True, shell="/usr/sbin/nologin"):
        got = probe(lab)
    assert got == {name: False for name in PROBES}, got


def test_layers_are_back_as_provisioned(lab: dict) -> None:
    assert in_host("vps", "sshd -T -C user=pitunnel,host=x,addr=192.0.2.9") == lab["sshd"]
    assert in_host("vps", f"cat {KEYS}") == lab["keys"]
    assert in_host("vps", "getent passwd pitunnel").strip().endswith(":/usr/sbin/nologin")
    code, p = play(lab["inventory"], provision_site)
    assert code == 0 and p is not None and all(r.changed == 0 for r in p.reporter.recaps.values())
