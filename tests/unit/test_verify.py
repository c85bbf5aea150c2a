"""`invoke verify` without a lab: SSH through the tunnel against a real SSH server on loopback
(tests/unit/sshd_fake.py), HTTP through "Nginx" (a local HTTP server) compared with the Pi's own answer (an
SSH channel played by a fake transport), the negative probes run by a real `sh` with a stub for the tunnel's
ssh, and what the report says."""

from __future__ import annotations

import dataclasses
import http.server
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from pitunnel.inventory import Inventory, PiSpec, TunnelSpec, VpsSpec
from pitunnel.remote import Remote
from pitunnel.roles.probes import exposure, http_route, login, verify
from pitunnel.roles.probes.http_route import Answer
from pitunnel.roles.pi.sshd import sshd_passwords, sshd_passwords_fact
from pitunnel.roles.probes.report import PathReport, print_reports
from pitunnel.roles.probes.unit import unit_fact
from tests.unit.fake_hosts import FakeHost, connection_of, in_order, load, play_on
from tests.unit.sshd_fake import FakeSshd

INVENTORY = """
settings: {laptop_key: null, known_hosts: known_hosts}
vps:
  main: {address: 203.0.113.1, acme: {email: ops@example.com}}
pis:
  alpha:
    address: 10.0.0.2
    user: admin
    vps: main
    tunnels:
      ssh: {type: ssh, remote_port: 20022, public: true}
      web: {type: http, local_port: 8080, remote_port: 20080, path: /alpha/}
      cam: {type: http, local_port: 8081, remote_port: 20081, server_name: cam.example.com, basic_auth_file: cam.htpasswd}
  beta:
    address: 10.0.0.3
    port: 2222
    vps: main
    tunnels:
      ssh: {type: ssh, remote_port: 20023}
"""

PI_KEY = paramiko.ECDSAKey.generate()  # the Pi's host key
OTHER = paramiko.ECDSAKey.generate()
LOGIN = paramiko.ECDSAKey.generate()  # the laptop's login key


@pytest.fixture()
def inv(tmp_path: Path) -> Inventory:
    return load(tmp_path, INVENTORY, {"cam.htpasswd": "alice:$apr1$x$y\n"})


def pinned(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def at(inv: Inventory, pi: PiSpec) -> Remote:
    """The Pi's own connection, as the play holds it (never opened here): how verify logs in through a tunnel."""
    return Remote(pi, inv.settings.known_hosts)


def tunnel(inv: Inventory, pi: str, name: str, **changes: object) -> TunnelSpec:
    found = next(t for t in inv.pis[pi].tunnels if t.name == name)
    return dataclasses.replace(found, **changes)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- the Pi's own host key


def test_the_pis_host_key_comes_from_the_pin_or_the_laptops_known_hosts(inv: Inventory) -> None:
    assert not login.pi_host_keys(inv, inv.pis["alpha"]).keys()  # neither: unknown
    pin = dataclasses.replace(inv.pis["alpha"], host_key=pinned(PI_KEY))
    assert login.pi_host_keys(inv, pin).lookup("tunnel")[PI_KEY.get_name()] == PI_KEY  # type: ignore[index]
    inv.settings.known_hosts.write_text(f"[10.0.0.3]:2222 {pinned(OTHER)}\n10.0.0.2 {pinned(PI_KEY)}\n")
    assert login.pi_host_keys(inv, inv.pis["beta"]).lookup("tunnel")[OTHER.get_name()] == OTHER  # type: ignore[index]
    assert login.pi_host_keys(inv, inv.pis["alpha"]).lookup("tunnel")[PI_KEY.get_name()] == PI_KEY  # type: ignore[index]


def test_a_revoked_or_ca_line_in_known_hosts_is_no_proof_of_the_pi(inv: Inventory) -> None:
    """paramiko's own reader fails on a `@revoked` or `@cert-authority` line; verify reads around them, and a
    revoked key is not the Pi's key, even where another line lists it."""
    inv.settings.known_hosts.write_text(f"@cert-authority * {pinned(OTHER)}\n10.0.0.2 {pinned(PI_KEY)}\n"
                                        f"[10.0.0.3]:2222 {pinned(OTHER)}\n@revoked 10.0.0.2 {pinned(PI_KEY)}\n")
    assert not login.pi_host_keys(inv, inv.pis["alpha"]).keys()
    assert login.pi_host_keys(inv, inv.pis["beta"]).lookup("tunnel")[OTHER.get_name()] == OTHER  # type: ignore[index]


# --------------------------------------------------------------------------------- ssh through the tunnel


@pytest.fixture
def sshd() -> Iterator[FakeSshd]:
    server = FakeSshd(PI_KEY)
    yield server
    server.close()


def public(inv: Inventory, sshd: FakeSshd, *, host_key: paramiko.PKey = PI_KEY,
           key: Path | None = None) -> tuple[PiSpec, TunnelSpec, VpsSpec]:
    pi = dataclasses.replace(inv.pis["alpha"], host_key=pinned(host_key), key=key)
    return pi, tunnel(inv, "alpha", "ssh", remote_port=sshd.port), dataclasses.replace(inv.vps["main"], address="127.0.0.1")


def test_ssh_through_a_public_tunnel_lands_on_the_pi(inv: Inventory, sshd: FakeSshd) -> None:
    pi, t, vps = public(inv, sshd)
    ok, detail, hint = login.ssh_through(inv, pi, FakeHost("main"), t, vps, at(inv, pi))  # type: ignore[arg-type]
    assert (ok, detail, hint) == (True, f"127.0.0.1:{sshd.port}: alpha's host key (ecdsa-sha2-nistp256)", "")


def test_another_host_answering_fails_with_its_fingerprint(inv: Inventory, sshd: FakeSshd) -> None:
    from pitunnel.hostkeys import fingerprint
    pi, t, vps = public(inv, sshd, host_key=OTHER)
    ok, detail, hint = login.ssh_through(inv, pi, FakeHost("main"), t, vps, at(inv, pi))  # type: ignore[arg-type]
    assert not ok and detail == f"127.0.0.1:{sshd.port}: host key {fingerprint(PI_KEY)} is not alpha's"
    assert hint == "another host answers on this port: check remote_port clashes and the tunnel's -R"


def test_ssh_through_logs_in_with_the_laptops_key_and_names_the_host(inv: Inventory, sshd: FakeSshd,
                                                                    tmp_path: Path) -> None:
    LOGIN.write_private_key_file(str(tmp_path / "login"))
    sshd.client_key = LOGIN
    pi, t, vps = public(inv, sshd, key=tmp_path / "login")
    ok, detail, hint = login.ssh_through(inv, pi, FakeHost("main"), t, vps, at(inv, pi))  # type: ignore[arg-type]
    assert ok and hint == ""
    assert detail == f"127.0.0.1:{sshd.port}: alpha's host key, logged in as admin, hostname {socket.gethostname()}"
    assert sshd.users == ["admin"] and sshd.commands == ["hostname"]
    sshd.client_key = OTHER  # the laptop's key is not (yet) on the Pi
    ok, detail, hint = login.ssh_through(inv, pi, FakeHost("main"), t, vps, at(inv, pi))  # type: ignore[arg-type]
    assert not ok and detail == f"127.0.0.1:{sshd.port}: alpha's host key, but login refused"
    assert hint == "the tunnel reached the Pi's sshd but login failed: was the laptop key pushed?"


def test_nothing_listening_publicly_says_why(inv: Inventory, sshd: FakeSshd) -> None:
    pi, t, vps = public(inv, sshd)
    t = dataclasses.replace(t, remote_port=free_port())
    ok, detail, hint = login.ssh_through(inv, pi, FakeHost("main"), t, vps, at(inv, pi))  # type: ignore[arg-type]
    assert not ok and detail.startswith(f"127.0.0.1:{t.remote_port}: ") and "refused" in detail.lower()
    assert hint == ("Connection refused: nothing listens publicly on the VPS port. Is the tunnel up, and does the VPS "
                    "let it bind publicly (GatewayPorts clientspecified for the tunnel account)?")


def test_an_unknown_pi_host_key_is_not_a_pass(inv: Inventory) -> None:
    ok, detail, hint = login.ssh_through(inv, inv.pis["alpha"], FakeHost("main"), tunnel(inv, "alpha", "ssh"),  # type: ignore[arg-type]
                                          inv.vps["main"], at(inv, inv.pis["alpha"]))
    assert (ok, detail) == (False, "the Pi's host key is unknown to the laptop")
    assert hint == "record it on first direct contact (--accept-new-host-keys) or pin host_key in the inventory"


class Jump:
    """The VPS connection's transport: a direct-tcpip channel to 127.0.0.1:port there (here: to `port`)."""

    def __init__(self, port: int | None) -> None:
        self.port, self.opened = port, []  # type: int | None, list[tuple[str, int]]

    def open_channel(self, kind: str, dest: tuple[str, int], src: tuple[str, int], timeout: float) -> socket.socket:
        assert kind == "direct-tcpip"
        self.opened.append(dest)
        if self.port is None:
            raise paramiko.ChannelException(2, "Connect failed")
        return socket.create_connection(("127.0.0.1", self.port))


def test_ssh_through_a_private_tunnel_jumps_via_the_vps(inv: Inventory, sshd: FakeSshd) -> None:
    pi = dataclasses.replace(inv.pis["beta"], host_key=pinned(PI_KEY))
    vps_remote = FakeHost("main")
    jump = Jump(sshd.port)
    vps_remote.connection = connection_of(jump)  # type: ignore[attr-defined]
    ok, detail, _ = login.ssh_through(inv, pi, vps_remote, tunnel(inv, "beta", "ssh"), inv.vps["main"], at(inv, pi))  # type: ignore[arg-type]
    assert ok and detail == "jump via main to 127.0.0.1:20023: beta's host key (ecdsa-sha2-nistp256)"
    assert jump.opened == [("127.0.0.1", 20023)]
    vps_remote.connection = connection_of(Jump(None))  # type: ignore[attr-defined]
    ok, detail, hint = login.ssh_through(inv, pi, vps_remote, tunnel(inv, "beta", "ssh"), inv.vps["main"], at(inv, pi))  # type: ignore[arg-type]
    assert not ok and detail.startswith("jump via main to 127.0.0.1:20023: ")
    assert hint == "the tunnel is not listening on the VPS: is pitunnel@main.service up on the Pi?"


# ------------------------------------------------------------------------------------ http through Nginx


def raw(status: int, body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in ("Content-Type: text/html", *headers))
    return f"HTTP/1.1 {status} X\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


class Channel:
    """Hands out `data` at once; then the end of the stream, or (`open`, an app keeping the connection open)
    a timeout; one that must not be read again after a whole answer fails the test if it is."""

    def __init__(self, data: bytes, *, open: bool = False, strict: bool = False) -> None:
        self.data, self.open, self.strict, self.sent, self.reads = data, open, strict, b"", 0

    def settimeout(self, seconds: float) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, size: int) -> bytes:
        self.reads += 1
        if not self.data:
            assert not self.strict, "read again after a whole answer: verify would wait for the app's timeout"
            if self.open:
                raise socket.timeout("timed out")
        data, self.data = self.data, b""
        return data

    def close(self) -> None:
        pass


class Channels:
    """An SSH transport whose direct-tcpip channels answer `answers` in turn (None: nothing listens)."""

    def __init__(self, *answers: bytes | None) -> None:
        self.answers, self.opened = list(answers), []  # type: list[bytes | None], list[tuple[str, int]]
        self.channels: list[Channel] = []

    def open_channel(self, kind: str, dest: tuple[str, int], src: tuple[str, int], timeout: float) -> Channel:
        assert kind == "direct-tcpip"
        self.opened.append(dest)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer is None:
            raise paramiko.ChannelException(2, "Connect failed")
        self.channels.append(Channel(answer))
        return self.channels[-1]


class Nginx:
    """A local HTTP server (HTTPS with `tls`) answering `answers` in turn (the last one from then on); keeps
    each request's path and Host header."""

    def __init__(self, *answers: tuple[int, bytes, tuple[str, ...]], tls: ssl.SSLContext | None = None) -> None:
        self.answers, self.seen = list(answers), []  # type: list[tuple[int, bytes, tuple[str, ...]]], list[tuple[str, str]]
        nginx = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                nginx.seen.append((self.path, self.headers["Host"]))
                status, body, headers = nginx.answers.pop(0) if len(nginx.answers) > 1 else nginx.answers[0]
                self.send_response(status)
                for h in ("Content-Type: text/html", *headers):
                    self.send_header(*h.split(": ", 1))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:  # HTTPS: each connection's handshake is made as it is accepted
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()


@pytest.fixture
def nginx_at() -> Iterator[list[Nginx]]:
    started: list[Nginx] = []
    yield started
    for n in started:
        n.server.shutdown()
        n.server.server_close()


APP = b"<html>garden sensors</html>"
NGINX_502 = b"<html><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></html>"


def http_check(inv: Inventory, nginx_at: list[Nginx], name: str, nginx: Nginx | None, pi_side: Channels,
               vps_side: Channels | None = None) -> tuple[bool, str, str]:
    port = nginx.port if nginx else free_port()
    if nginx:
        nginx_at.append(nginx)
    # the fake Nginx speaks plain HTTP: the route as before its certificate (HTTPS has tests of its own)
    vps = dataclasses.replace(inv.vps["main"], address="127.0.0.1", http_port=port, acme=None)
    pi_remote, vps_remote = FakeHost("alpha"), FakeHost("main")
    pi_remote.connection = connection_of(pi_side)  # type: ignore[attr-defined]
    vps_remote.connection = connection_of(vps_side or Channels(None))  # type: ignore[attr-defined]
    return http_route.http_through(vps, inv.pis["alpha"], tunnel(inv, "alpha", name), pi_remote, vps_remote)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_same_answer_through_nginx_as_on_the_pi_passes(inv: Inventory, nginx_at: list[Nginx]) -> None:
    nginx = Nginx((200, APP, ()))
    pi_side = Channels(raw(200, APP))
    ok, detail, hint = http_check(inv, nginx_at, "web", nginx, pi_side)
    assert ok and hint == "" and detail.startswith(f"http://127.0.0.1:{nginx.port}/alpha/: HTTP 200, the same answer")
    assert not detail.endswith("(second try)")
    assert nginx.seen == [("/alpha/", "127.0.0.1")] and pi_side.opened == [("127.0.0.1", 8080)]
    assert pi_side.channels[0].sent == (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pitunnel-verify\r\n"
                                        b"Accept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n")


def test_a_different_first_answer_gets_a_second_try(inv: Inventory, nginx_at: list[Nginx]) -> None:
    nginx = Nginx((200, b"<html>warming up</html>", ()), (200, APP, ()))
    ok, detail, _ = http_check(inv, nginx_at, "web", nginx, Channels(raw(200, APP)))
    assert ok and detail.endswith(" (second try)") and len(nginx.seen) == 2


def test_nginx_without_the_tunnel_blames_the_tunnel(inv: Inventory, nginx_at: list[Nginx]) -> None:
    ok, detail, hint = http_check(inv, nginx_at, "web", Nginx((502, NGINX_502, ())), Channels(raw(200, APP)))
    assert not ok and "502 from Nginx: nothing answered through the tunnel" in detail
    assert hint == "nothing answers at 127.0.0.1:20080 on main: the tunnel is down; check the Pi's pitunnel@main.service"


def test_a_tunnel_that_answers_behind_nginx_blames_the_route(inv: Inventory, nginx_at: list[Nginx]) -> None:
    behind = Channels(raw(200, APP))
    ok, _, hint = http_check(inv, nginx_at, "web", Nginx((404, b"no tunnel here\n", ())), Channels(raw(200, APP)), behind)
    assert not ok and behind.opened == [("127.0.0.1", 20080)]
    assert b"\r\nHost: 127.0.0.1\r\n" in behind.channels[0].sent
    assert hint == ("127.0.0.1:20080 on main answers as the Pi itself, so Nginx does not route this request there: "
                    "rerun provision-vps")


@pytest.mark.parametrize(("behind", "local", "hint"), [
    (raw(200, b"<html>someone else</html>"), raw(500, b"oops"),
     "127.0.0.1:20080 on main answers 200; the app on the Pi answers 500: another tunnel holds the port?"),
    (raw(404, b"x"), raw(200, APP), "127.0.0.1:20080 on main answers 404; the app on the Pi answers 200: another tunnel holds the port?"),
    (raw(200, b"<html>another page</html>"), raw(200, APP),
     "the page differs on every request: verify compares status and body with the Pi's own answer"),
], ids=["app-fails-on-the-pi", "another-answers-behind", "page-changes"])
def test_which_half_is_wrong_when_the_answers_differ(inv: Inventory, nginx_at: list[Nginx], behind: bytes, local: bytes,
                                                     hint: str) -> None:
    ok, _, said = http_check(inv, nginx_at, "web", Nginx((200, b"<html>elsewhere entirely</html>", ())),
                             Channels(local), Channels(behind))
    assert not ok and said == hint


def test_nginx_not_answering_or_the_app_not_answering(inv: Inventory, nginx_at: list[Nginx]) -> None:
    ok, detail, hint = http_check(inv, nginx_at, "web", None, Channels(raw(200, APP)))
    assert not ok and hint == "Nginx does not answer on the VPS: run provision-vps, check the firewall"
    ok, detail, hint = http_check(inv, nginx_at, "web", Nginx((200, APP, ())), Channels(None))
    assert not ok and ": nothing to compare with, 127.0.0.1:8080 on alpha: " in detail and "AllowTcpForwarding" in hint


def test_behind_basic_auth_nginx_must_ask_and_the_tunnel_must_answer(inv: Inventory, nginx_at: list[Nginx]) -> None:
    asks = (401, b"auth", ('WWW-Authenticate: Basic realm="alpha"',))
    nginx = Nginx(asks)
    pi_side, behind = Channels(raw(200, APP)), Channels(raw(200, APP))
    ok, detail, _ = http_check(inv, nginx_at, "cam", nginx, pi_side, behind)
    assert ok and nginx.seen == [("/", "cam.example.com")]
    assert pi_side.opened == [("127.0.0.1", 8081)] and behind.opened == [("127.0.0.1", 20081)]
    assert all(b"\r\nHost: cam.example.com\r\n" in c.sent for c in pi_side.channels + behind.channels)
    assert detail.startswith(f"http://127.0.0.1:{nginx.port}/ (Host: cam.example.com): 401 from Nginx's basic auth "
                             '(realm="alpha"); behind it, 127.0.0.1:20081 on main: HTTP 200, the same answer')
    ok, detail, hint = http_check(inv, nginx_at, "cam", Nginx((200, APP, ())), Channels(raw(200, APP)), Channels(raw(200, APP)))
    assert not ok and 'not Nginx\'s basic auth for alpha (realm="alpha")' in detail
    assert hint == "the route is not the one provision-vps wrote: rerun provision-vps"
    other_realm = (401, b"auth", ('WWW-Authenticate: Basic realm="beta"',))
    assert not http_check(inv, nginx_at, "cam", Nginx(other_realm), Channels(raw(200, APP)), Channels(raw(200, APP)))[0]
    ok, detail, hint = http_check(inv, nginx_at, "cam", Nginx(asks), Channels(raw(200, APP)), Channels(None))
    assert not ok and ": 401 from Nginx, but 127.0.0.1:20081 on main: " in detail
    assert hint == "the tunnel is not listening on the VPS: check the Pi's pitunnel@main.service"


# ------------------------------------------------------------------------------------------- the answers


def test_what_an_answer_says() -> None:
    named = Answer(200, b'{"pi": "alpha"}', (("Content-Type", "application/json"),))
    assert named.header("content-type") == "application/json" and named.header("X-None") == ""
    assert named.named == "alpha"
    assert Answer(200, b"[1, 2]").named is None and Answer(200, b"not json").named is None
    assert Answer(200, b'{"pi": 3}').named is None
    long = Answer(200, b"x" * 41)
    assert long.describe() == f"200, 41 bytes (sha256 {long.digest}) {'x' * 40 + '...'!r}"
    assert Answer(404, b"short").describe().endswith("'short'") and len(long.digest) == 12


def test_a_whole_answer_is_known_by_its_length_or_its_last_chunk() -> None:
    assert not http_route._complete(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n")  # the head is not over
    assert not http_route._complete(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhell")
    assert http_route._complete(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
    assert http_route._complete(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert not http_route._complete(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    assert not http_route._complete(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nhello")  # only the end tells


def test_the_same_request_goes_both_ways() -> None:
    assert http_route.request_headers("cam.example.com") == {"Host": "cam.example.com", "User-Agent": "pitunnel-verify",
                                                         "Accept": "*/*", "Accept-Encoding": "identity"}


# ----------------------------------------------------------------------------------------------- probes


@pytest.fixture
def stub_ssh(tmp_path: Path) -> Path:
    """`runuser` (the tunnel account's ssh) answering $FAKE_OUT and exiting $FAKE_RC."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "runuser").write_text('#!/bin/sh\necho "$FAKE_OUT"; exit "${FAKE_RC:-0}"\n')
    (bin_dir / "runuser").chmod(0o755)
    return bin_dir


def probe(script: str, bin_dir: Path, out: str, rc: int) -> list[str]:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_OUT": out, "FAKE_RC": str(rc)}
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, check=False, timeout=30)
    return done.stdout.splitlines()


def test_probes_pass_only_when_the_vps_refuses_each(inv: Inventory, stub_ssh: Path) -> None:
    script = exposure.probe_script(inv.pis["alpha"], inv.vps["main"], ["127.0.0.1:20023"], 29999)
    assert script.count("runuser -u pitunnel -- timeout ") == 5 and script.count('ssh -F "$probe_config"') == 5
    # this VPS's ssh_config without its RemoteForward lines (the running tunnel holds those ports), removed after
    assert "grep -v '^[[:space:]]*RemoteForward[[:space:]]' /etc/pitunnel/main/ssh_config > \"$probe_config\"" in script
    assert script.endswith('rm -f "$probe_config"\n')
    assert "-R 127.0.0.1:29999:127.0.0.1:9 pitunnel-vps" in script and "-R 127.0.0.1:20023:127.0.0.1:9" in script
    assert "-W 127.0.0.1:22 pitunnel-vps" in script
    refused = probe(script, stub_ssh, "Permission denied (publickey)", 255)
    assert refused == ["PROBE command ok", "PROBE pty ok", "PROBE forward-to-vps ok", "PROBE other-port ok",
                       "PROBE other-pi 127.0.0.1:20023 ok"]
    allowed = probe(script, stub_ssh, "uid=999(pitunnel) SSH-2.0-OpenSSH_9.2", 124)
    assert allowed == ["PROBE command FAIL ran: id", "PROBE pty FAIL got a shell",
                       "PROBE forward-to-vps FAIL reached the VPS sshd", "PROBE other-port FAIL listener accepted",
                       "PROBE other-pi 127.0.0.1:20023 FAIL listener accepted"]


def test_a_path_tries_the_other_pis_listeners_nearest_its_own_and_no_more(tmp_path: Path) -> None:
    """verify's cost per path stays flat with the fleet: 40 other Pis on the VPS, 8 of their listeners tried,
    the nearest to this Pi's ports (above and below it, loopback and public), each in one login."""
    pis = "".join(f"  p{i}: {{vps: main, tunnels: {{ssh: {{type: ssh, remote_port: {20000 + i}, "
                  f"public: {str(i % 2 == 0).lower()}}}}}}}\n" for i in range(41))
    inv = load(tmp_path, "settings: {laptop_key: null, known_hosts: known_hosts}\n"
                         "vps:\n  main: {address: 203.0.113.1}\npis:\n" + pis)
    script = exposure.probes_fact(inv, inv.pis["p20"], inv.vps["main"]).script
    tried = sorted(int(line.split("-R ")[1].split(":")[1]) for line in script.splitlines() if "PROBE other-pi" in line)
    assert tried == [20016, 20017, 20018, 20019, 20021, 20022, 20023, 20024]
    assert "-R 0.0.0.0:20016:" in script and "-R 127.0.0.1:20017:" in script
    assert exposure.neighbours([], [(7, "a"), (5, "b")]) == ["b", "a"]  # a path without tunnels: the lowest ports
    assert exposure.neighbours([10], [(12, "up"), (8, "down")]) == ["down", "up"]  # equally near: the lower first


def unit_says(*lines: str) -> str:
    """The unit fact's output: what is-enabled, is-active and the watchdog's is-active printed, as many as given."""
    return "".join(f"{name}={line}\n" for name, line in zip(("enabled", "active", "watchdog"), lines))


def pi_host(name: str, unit: str, probes: str = "", sshd: str = "") -> FakeHost:
    """A Pi answering verify's facts: its unit, its probes' lines, its sshd -T."""
    return FakeHost(name, [("systemctl is-enabled", unit), ("PROBE", probes), ("sshd -T", sshd)])


def run_verify(inv: Inventory, pi: str, unit: str, probes: str = "", ss: str = "") -> tuple[PathReport, FakeHost]:
    host = pi_host(pi, unit, probes)
    host.target = at(inv, inv.pis[pi]).target  # type: ignore[attr-defined]  # whom ssh through logs in as
    vps = FakeHost("main", [("ss -Htln", ss)], [("ss -Htln", ss)])
    report = PathReport(pi, vps="main")
    present = frozenset(line.split()[3] for line in ss.splitlines())
    verify.verify_pi(play_on(inv, {"main": vps, pi: host}), host, report, present)  # type: ignore[arg-type, dict-item]
    return report, host


def test_verify_probes_every_other_listener_and_a_free_port(inv: Inventory) -> None:
    _, host = run_verify(inv, "beta", unit_says("enabled", "active", "active"))
    (script,) = host.scripts  # one round trip: the unit, then the probes, then sshd -T
    units = unit_fact("main").script
    assert units.startswith("printf 'enabled=%s\\nactive=%s\\nwatchdog=%s\\n' \"$(systemctl is-enabled "
                            "pitunnel@main.service 2>/dev/null)\" \"$(systemctl is-active pitunnel@main.service "
                            "2>/dev/null)\" \"$(systemctl is-active pitunnel-watchdog@main.service 2>/dev/null)\"")
    assert script.index(units) < script.index("PROBE command") < script.index(sshd_passwords_fact(inv.pis["beta"]).script)
    for other in ("0.0.0.0:20022", "127.0.0.1:20080", "127.0.0.1:20081"):  # alpha's: the same VPS
        assert f"-R {other}:127.0.0.1:9 " in script
    assert "-R 127.0.0.1:20023:" not in script  # its own is no probe
    assert "-R 127.0.0.1:29999:127.0.0.1:9 " in script  # the highest free port of the range
    assert "sshd -T -C user=pi,host=localhost,addr=127.0.0.1 " in script


def test_verify_reads_the_probes_and_units(inv: Inventory, stub_ssh: Path) -> None:
    script = exposure.probe_script(inv.pis["beta"], inv.vps["main"], ["0.0.0.0:20022"], 29999)
    probes = "\n".join(probe(script, stub_ssh, "uid=1", 124)[:1] + probe(script, stub_ssh, "no", 1)[1:])
    report, _ = run_verify(inv, "beta", unit_says("enabled", "active", "inactive"), probes + "\n",
                           ss="LISTEN 0 128 127.0.0.1:20023 0.0.0.0:*\n")
    by_name = {c.name: c for c in report.checks}
    assert by_name["unit enabled and active"].passed and by_name["unit enabled and active"].detail == "enabled, active"
    assert not by_name["watchdog active"].passed and by_name["watchdog active"].detail == "inactive"
    assert "systemctl status pitunnel-watchdog@main.service" in by_name["watchdog active"].hint
    assert by_name["ssh: VPS listens on 127.0.0.1:20023"].passed
    assert by_name["ssh: VPS listens on 127.0.0.1:20023"].detail == "bound as intended"
    failed = by_name["refused: command"]
    assert not failed.passed and failed.detail == "command FAIL ran: id" and "rerun provision-vps" in failed.hint
    assert by_name["refused: other-pi 0.0.0.0:20022"].passed and by_name["refused: other-port"].detail == "refused"
    assert not by_name["ssh: ssh lands on beta"].passed  # its host key is unknown here
    assert not report.passed


def test_verify_of_a_pi_whose_unit_says_nothing(inv: Inventory) -> None:
    report, _ = run_verify(inv, "beta", unit_says())
    by_name = {c.name: c for c in report.checks}
    assert not by_name["unit enabled and active"].passed and by_name["watchdog active"].detail == "unknown"
    listen = by_name["ssh: VPS listens on 127.0.0.1:20023"]
    assert not listen.passed and listen.detail == "listeners on that port: none"


def test_the_report_printed(capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = PathReport("alpha"), PathReport("beta")
    good.add("unit enabled and active", True, "enabled, active", "never shown")
    good.add("sshd: password login off", True, "on", "set it", warning=True)
    bad.add("watchdog active", False, "inactive", "start it")
    print_reports([good, bad])
    assert capsys.readouterr().out.splitlines() == [
        "", "alpha: PASS",
        f"  PASS  {'unit enabled and active':<42} enabled, active",
        f"  WARN  {'sshd: password login off':<42} on", "        hint: set it",
        "", "beta: FAIL",
        f"  FAIL  {'watchdog active':<42} inactive", "        hint: start it"]


# ------------------------------------------------------------------------------ reading the Pi's own answer


class Through:
    """A transport whose one channel is `chan`."""

    def __init__(self, chan: Channel) -> None:
        self.chan = chan

    def open_channel(self, kind: str, dest: tuple[str, int], src: tuple[str, int], timeout: float) -> Channel:
        return self.chan


def test_a_whole_answer_is_not_waited_on_and_a_big_body_is_cut() -> None:
    from pitunnel.roles.probes.http_route import BODY_LIMIT, fetch_over_ssh
    strict = Channel(raw(200, b"hello"), strict=True)  # a read after the whole answer fails the test
    assert fetch_over_ssh(Through(strict), 80, "h").body == b"hello"  # type: ignore[arg-type]
    big = Channel(raw(200, b"x" * (BODY_LIMIT + 5000)))
    assert len(fetch_over_ssh(Through(big), 80, "h").body) == BODY_LIMIT  # type: ignore[arg-type]  # compared on 64 KiB


def test_an_app_that_keeps_the_connection_open_after_a_body_of_unknown_length() -> None:
    from pitunnel.roles.probes.http_route import fetch_over_ssh
    chan = Channel(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nLocation: http://x:1/\r\n\r\nhello", open=True)
    answer = fetch_over_ssh(Through(chan), 80, "h")  # type: ignore[arg-type]
    assert (answer.status, answer.body, answer.header("location")) == (200, b"hello", "http://x:1/")


def test_a_header_with_colons_in_its_value_does_not_confuse_the_length() -> None:
    assert http_route._complete(b"HTTP/1.1 200 OK\r\nDate: Mon, 30 Nov 2026 10:00:00 GMT\r\nContent-Length: 2\r\n\r\nhi")


# ------------------------------------------------------------------------------------ judging, exactly


@pytest.mark.parametrize("status", [502, 503, 504])
def test_nginxs_gateway_errors_never_pass(status: int) -> None:
    ok, detail = http_route.judge("alpha", Answer(status, b"x"), Answer(200, APP))
    assert not ok and detail == f"{status} from Nginx: nothing answered through the tunnel"
    ok, detail = http_route.judge("alpha", Answer(status, b"x"), Answer(status, b"x"))
    assert not ok and detail == f"{status} through the VPS, and the app answers {status} on the Pi itself too"


def test_another_status_the_app_gives_itself_passes_when_the_same() -> None:
    assert http_route.judge("alpha", Answer(505, b"app says no"), Answer(505, b"app says no"))[0]
    ok, detail = http_route.judge("alpha", Answer(500, b"a"), Answer(200, b"a"))
    assert not ok and detail.startswith("status and body differ: through the VPS 500, 1 bytes")
    ok, detail = http_route.judge("alpha", Answer(200, b"a"), Answer(200, b"b" * 50))
    assert not ok and detail.startswith("the body differs: through the VPS 200, 1 bytes")


def test_a_changing_page_passes_at_90_percent_alike_and_10_percent_longer() -> None:
    html = (("Content-Type", "text/html"),)
    local = Answer(200, b"a" * 90 + b"b" * 10, html)
    assert http_route.judge("alpha", Answer(200, b"a" * 90 + b"c" * 10, html), local)[0]  # exactly 90% alike
    assert not http_route.judge("alpha", Answer(200, b"a" * 89 + b"c" * 11, html), local)[0]
    longer = Answer(200, b"a" * 90 + b"b" * 10 + b"a" * 10, html)  # 10% longer, 95% alike
    assert http_route.judge("alpha", longer, local)[0]
    assert not http_route.judge("alpha", Answer(200, longer.body + b"a", html), local)[0]  # 11% longer


def test_a_long_page_that_changes_a_timestamp_passes() -> None:
    import random
    html = (("Content-Type", "text/html"),)
    page = b"<html>" + b"<p>reading</p>" * 300
    assert http_route.judge("alpha", Answer(200, page + b"at 10:00:01", html), Answer(200, page + b"at 10:00:02", html))[0]
    words = random.Random(1)
    prose = " ".join(words.choice(["soil", "moist", "sun", "at", "the", "bed", "dry"]) for _ in range(600)).encode()
    assert http_route.judge("alpha", Answer(200, prose + b" 10:01", html), Answer(200, prose + b" 10:02", html))[0]


def test_describe_cuts_at_40_bytes_and_replaces_what_is_not_text() -> None:
    assert not Answer(200, b"y" * 40).describe().endswith("...'")
    assert Answer(200, b"\xff\xfe ok").describe().endswith("'\ufffd\ufffd ok'")


# ------------------------------------------------------------------------------------ passwords, exactly


def test_password_login_checks_say_exactly_what_they_saw(inv: Inventory) -> None:
    alpha, main = inv.pis["alpha"], inv.vps["main"]  # alpha: a public ssh tunnel
    report = PathReport("alpha")
    exposure.passwords_check(report, alpha, main, sshd_passwords("passwordauthentication no\nkbdinteractiveauthentication no"))
    exposure.passwords_check(report, alpha, main, sshd_passwords("passwordauthentication yes"))
    exposure.passwords_check(report, alpha, main, sshd_passwords(""))
    closed = dataclasses.replace(alpha, disable_password_login=True)
    exposure.passwords_check(report, closed, main, sshd_passwords(""))
    off, on, unknown, overridden = report.checks
    assert (off.name, off.passed, off.warning, off.detail) == (
        "sshd: password login off", True, False, "sshd -T: passwordauthentication no, kbdinteractiveauthentication no")
    assert on.passed and on.warning and on.detail == (
        "alpha's sshd is public at 203.0.113.1:20022 and accepts passwords: anyone can guess them, from 127.0.0.1 as "
        "far as the Pi can tell; set `disable_password_login: true` for alpha once key login works "
        "(sshd -T: passwordauthentication yes)")
    assert on.hint == "once key login works, set `disable_password_login: true` for alpha and rerun provision-pi"
    assert "may accept passwords (sshd -T could not be read)" in unknown.detail
    assert unknown.detail.endswith("(sshd -T: nothing (sshd -T failed))")
    assert (overridden.name, overridden.passed) == ("sshd: password login off", False)
    assert overridden.detail == "disable_password_login is true, but sshd -T says: nothing (sshd -T failed)"
    assert overridden.hint == ("a drop-in read before ours turns them on again (sshd keeps the first value it reads): "
                               "on the Pi, grep -ri passwordauthentication /etc/ssh/sshd_config /etc/ssh/sshd_config.d/")


# --------------------------------------------------------------------------------- one Pi, every check


def test_verify_of_a_pi_with_ssh_and_http_tunnels(tmp_path: Path, nginx_at: list[Nginx]) -> None:
    nginx = Nginx((200, APP, ()))
    nginx_at.append(nginx)
    text = INVENTORY.replace("main: {address: 203.0.113.1, acme: {email: ops@example.com}}", f"main: {{address: 127.0.0.1, http_port: {nginx.port}, "
                                                             "port_range: [20000, 20080]}")
    inv = load(tmp_path, text.replace("basic_auth_file: cam.htpasswd", ""))
    pi = pi_host("alpha", unit_says("enabled", "active", "active"), "PROBE command ok\n",
                 "passwordauthentication yes\nkbdinteractiveauthentication no\n")
    vps = FakeHost("main")
    pi.connection = connection_of(Channels(raw(200, APP)))  # type: ignore[attr-defined]
    pi.target = at(inv, inv.pis["alpha"]).target  # type: ignore[attr-defined]
    vps.connection = connection_of(Channels(None))  # type: ignore[attr-defined]
    report = PathReport("alpha", vps="main")
    present = frozenset({"0.0.0.0:20022", "127.0.0.1:20080", "127.0.0.1:20081"})
    verify.verify_pi(play_on(inv, {"main": vps, "alpha": pi}), pi, report, present)  # type: ignore[arg-type, dict-item]
    by_name = {c.name: c for c in report.checks}
    in_order(list(by_name), ["unit enabled and active", "watchdog active", "ssh: VPS listens on 0.0.0.0:20022",
                             "web: VPS listens on 127.0.0.1:20080", "cam: VPS listens on 127.0.0.1:20081",
                             "ssh: ssh lands on alpha", "web: http via nginx reaches alpha",
                             "cam: http via nginx reaches alpha", "sshd: password login off", "refused: command"])
    assert by_name["web: http via nginx reaches alpha"].passed and by_name["cam: http via nginx reaches alpha"].passed
    assert by_name["web: http via nginx reaches alpha"].detail.startswith(f"http://127.0.0.1:{nginx.port}/alpha/: HTTP 200")
    assert by_name["ssh: ssh lands on alpha"].detail == "the Pi's host key is unknown to the laptop"
    assert by_name["ssh: ssh lands on alpha"].hint.startswith("record it on first direct contact")
    assert by_name["ssh: VPS listens on 0.0.0.0:20022"].passed
    assert by_name["sshd: password login off"].warning and "127.0.0.1:20022 and accepts passwords" in \
        by_name["sshd: password login off"].detail
    assert "-R 127.0.0.1:20079:127.0.0.1:9 " in pi.scripts[0]  # the range's top port is taken: the next one
    assert pi.timeouts == [120]  # the probes take their time


def test_a_pi_whose_unit_is_missing_or_whose_output_stops_short(inv: Inventory) -> None:
    report, _ = run_verify(inv, "beta", unit_says("", "inactive", "inactive"))  # is-enabled prints nothing for a missing unit
    assert {c.name: c.detail for c in report.checks}["unit enabled and active"] == ", inactive"
    report, _ = run_verify(inv, "beta", unit_says("enabled", "active"))
    details = {c.name: (c.passed, c.detail) for c in report.checks}
    assert details["unit enabled and active"] == (True, "enabled, active") and details["watchdog active"] == (False, "unknown")
    report, _ = run_verify(inv, "beta", unit_says("enabled", "active", "inactive"))
    assert {c.name: c.detail for c in report.checks}["watchdog active"] == "inactive"
    down = {c.name: c for c in run_verify(inv, "beta", unit_says("disabled", "inactive", "inactive"))[0].checks}
    assert down["unit enabled and active"].hint == "on the Pi: systemctl status pitunnel@main.service; journalctl -u pitunnel@main.service"
    listen = down["ssh: VPS listens on 127.0.0.1:20023"]
    assert listen.hint == "none: the tunnel is down or its -R was refused (stale listener? see troubleshooting)"


def test_a_listener_bound_both_ways_is_not_as_intended(inv: Inventory) -> None:
    both = "LISTEN 0 128 127.0.0.1:20023 0.0.0.0:*\nLISTEN 0 128 0.0.0.0:20023 0.0.0.0:*\n"
    report, _ = run_verify(inv, "beta", unit_says("enabled", "active", "active"), ss=both)
    listen = {c.name: c for c in report.checks}["ssh: VPS listens on 127.0.0.1:20023"]
    assert not listen.passed and listen.detail == "listeners on that port: ['0.0.0.0:20023', '127.0.0.1:20023']"


def test_the_probes_and_the_unit_are_read_by_name() -> None:
    found = exposure.probes("noise\nPROBE other-pi 127.0.0.1:20023 ok\nPROBE other-pi 0.0.0.0:20022 FAIL listener accepted\n")
    assert found == (exposure.Probe("other-pi 127.0.0.1:20023", True, "other-pi 127.0.0.1:20023 ok"),
                     exposure.Probe("other-pi", False, "other-pi 0.0.0.0:20022 FAIL listener accepted"))
    state = unit_fact("main").process("watchdog=inactive\nenabled=disabled\nactive=failed\n")
    assert (state.state, state.watchdog) == ("disabled, failed", "inactive")
