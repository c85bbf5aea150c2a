"""verify through real loopback ports: one path of a Pi with two VPSes, SSH landing on a fake sshd behind a
public port, HTTP through a local Nginx stand-in, and, when the laptop cannot reach a port the VPS publishes,
which of the three causes it is (nothing listens, the VPS's host firewall, a firewall outside the VPS), each
with its fix. Nothing here leaves 127.0.0.0/8."""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest

from pitunnel.inventory import Inventory
from pitunnel.roles.probes import reach, verify
from pitunnel.roles.probes.report import PathReport, Verdict
from pitunnel.roles.vps.firewall import HostFirewall
from tests.unit.fake_hosts import FakeHost, connection_of, load, play_on
from tests.unit.sshd_fake import FakeSshd
from tests.unit.test_firewall import IPTABLES, UFW, host_firewall
from tests.unit.test_verify import (APP, PI_KEY, Channels, Nginx, at, free_port, nginx_at, pi_host,  # noqa: F401
                                    pinned, raw, sshd, unit_says)

INVENTORY = """
settings: {laptop_key: null, known_hosts: known_hosts}
vps:
  main: {address: 127.0.0.1, http_port: HTTP, https_port: HTTPS, port_range: [1024, 65000]EXTRA}
  backup: {address: 127.0.0.1, port_range: [1024, 65000]}
pis:
  alpha:
    address: 10.0.0.2
    user: admin
    host_key: PIN
    vps: [main, backup]
    tunnels:
      ssh: {type: ssh, remote_port: SSH, public: true}
      web: {type: http, local_port: 8080, remote_port: 20080, path: /alpha/}
      hidden: {type: ssh, remote_port: 20023}
"""
CAM = "      cam: {type: http, local_port: 8081, remote_port: 20081, server_name: cam.example.com, basic_auth_file: c}\n"


def inventory(tmp_path: Path, *, ssh: int = 20022, http: int = 80, https: int = 443, extra: str = "") -> Inventory:
    text = INVENTORY.replace("PIN", pinned(PI_KEY)).replace("SSH", str(ssh)).replace("HTTPS", str(https))
    return load(tmp_path, text.replace("HTTP", str(http)).replace("EXTRA", extra))


def checked(inv: Inventory, *, present: frozenset[str] | None = frozenset(), firewall: HostFirewall | None = None,
            vps: str = "main", pi_side: Channels | None = None) -> dict[str, Verdict]:
    """verify's checks of alpha's path through `vps`, the Pi answering its facts (unit down, no probes)."""
    pi = pi_host("alpha", unit_says("disabled", "inactive", "inactive"))
    own = at(inv, inv.pis["alpha"])
    pi.target, pi.authenticate = own.target, own.authenticate  # type: ignore[attr-defined]  # how ssh through logs in
    pi.connection = connection_of(pi_side or Channels(raw(200, APP)))  # type: ignore[attr-defined]
    hosts = {name: FakeHost(name) for name in inv.vps}
    for host in hosts.values():
        host.connection = connection_of(Channels(None))  # type: ignore[attr-defined]
    report = PathReport("alpha", vps=vps)
    verify.verify_pi(play_on(inv, {**hosts, "alpha": pi}), pi, report, present, firewall)  # type: ignore[arg-type, dict-item]
    assert report.vps == vps
    return {c.name: c for c in report.checks}


def nothing_at(port: int, vps: str = "main") -> str:
    return (f"127.0.0.1:{port} ([Errno 111] Connection refused): nothing listens on port {port} of {vps}: "
            "is the tunnel (or Nginx) up?")


def test_the_path_through_the_second_vps_is_checked_on_that_vps(tmp_path: Path) -> None:
    checks = checked(inventory(tmp_path), vps="backup")
    assert checks["unit enabled and active"].hint == ("on the Pi: systemctl status pitunnel@backup.service; "
                                                      "journalctl -u pitunnel@backup.service")


def test_a_vps_that_did_not_answer_leaves_the_path_unproven_and_says_what_to_do(tmp_path: Path) -> None:
    (check,) = checked(inventory(tmp_path), present=None, vps="backup").values()
    assert not check.passed and check.detail == "backup (127.0.0.1) did not answer: this path is unproven"
    assert check.hint == "bring backup back (the Pi's other paths are checked on their own), then rerun verify"


def test_ssh_through_the_public_port_lands_on_the_pi_and_passes(tmp_path: Path, sshd: FakeSshd) -> None:  # noqa: F811
    check = checked(inventory(tmp_path, ssh=sshd.port))["ssh: ssh lands on alpha"]
    assert check.passed is True and check.detail == f"127.0.0.1:{sshd.port}: alpha's host key (ecdsa-sha2-nistp256)"


def test_a_public_ssh_port_nothing_listens_on_says_so_with_the_error(tmp_path: Path) -> None:
    port = free_port()
    check = checked(inventory(tmp_path, ssh=port))["ssh: ssh lands on alpha"]
    assert not check.passed and check.hint == nothing_at(port)


def test_a_public_ssh_port_the_vps_listens_on_but_its_firewall_blocks_says_which_rule(tmp_path: Path) -> None:
    port = free_port()
    check = checked(inventory(tmp_path, ssh=port), present=frozenset({f"0.0.0.0:{port}"}),
                    firewall=host_firewall(UFW))["ssh: ssh lands on alpha"]
    assert check.hint == (f"127.0.0.1:{port} ([Errno 111] Connection refused): main listens, but its host firewall "
                          "blocks it: ufw: default deny (incoming); rerun provision-vps (firewall: auto opens it)")


def test_nginx_silent_on_the_http_port_says_nothing_listens_there(tmp_path: Path) -> None:
    port = free_port()
    check = checked(inventory(tmp_path, http=port))["web: http via nginx reaches alpha"]
    assert not check.passed and check.hint == nothing_at(port)


def test_a_private_ssh_tunnel_is_tried_through_the_vps_connection(tmp_path: Path) -> None:
    check = checked(inventory(tmp_path))["hidden: ssh lands on alpha"]  # the VPS opens no channel here
    assert not check.passed and check.detail.startswith("jump via main to 127.0.0.1:20023: ")
    assert check.hint == "the tunnel is not listening on the VPS: is pitunnel@main.service up on the Pi?"


def test_behind_basic_auth_the_tunnel_is_asked_through_the_vps_connection(tmp_path: Path,
                                                                       nginx_at: list[Nginx]) -> None:  # noqa: F811
    nginx = Nginx((401, b"auth", ('WWW-Authenticate: Basic realm="alpha"',)))
    nginx_at.append(nginx)
    acme = ", acme: {email: ops@example.com}"
    inv = load(tmp_path, INVENTORY.replace("PIN", pinned(PI_KEY)).replace("HTTPS", "443").replace("HTTP", str(nginx.port))
               .replace("SSH", "20022").replace("EXTRA", acme).replace("65000]}", "65000]" + acme + "}") + CAM,
               {"c": "alice:$apr1$x$y\n"})
    # the fake Nginx speaks plain HTTP: the route as before its certificate
    inv = dataclasses.replace(inv, vps=MappingProxyType({n: dataclasses.replace(v, acme=None) for n, v in inv.vps.items()}))
    check = checked(inv)["cam: http via nginx reaches alpha"]
    assert not check.passed and ": 401 from Nginx, but 127.0.0.1:20081 on main: " in check.detail
    assert check.hint == "the tunnel is not listening on the VPS: check the Pi's pitunnel@main.service"


def test_an_http_port_the_vps_listens_on_but_its_firewall_blocks_says_which_rule(tmp_path: Path) -> None:
    port = free_port()
    check = checked(inventory(tmp_path, http=port), present=frozenset({f"0.0.0.0:{port}"}),
                    firewall=host_firewall(UFW))["web: http via nginx reaches alpha"]
    assert check.hint.endswith(": main listens, but its host firewall blocks it: ufw: default deny (incoming); "
                               "rerun provision-vps (firewall: auto opens it)")


@pytest.fixture
def listening() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections (and answers nothing)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def test_a_route_with_tls_is_told_apart_on_the_https_port(tmp_path: Path, listening: int) -> None:
    port = free_port()
    inv = inventory(tmp_path, http=listening, https=port,
                    extra=", tls_certificate: /etc/c.pem, tls_key: /etc/k.pem, public_name: localhost")
    assert checked(inv)["web: http via nginx reaches alpha"].hint == nothing_at(port)


def test_a_route_without_tls_is_told_apart_on_the_http_port(tmp_path: Path, listening: int) -> None:
    port = free_port()
    assert checked(inventory(tmp_path, http=port, https=listening))["web: http via nginx reaches alpha"].hint == \
        nothing_at(port)


def test_a_route_nginx_answers_wrongly_keeps_its_own_hint(tmp_path: Path, nginx_at: list[Nginx]) -> None:  # noqa: F811
    nginx = Nginx((200, b"<html>another app</html>", ()))
    nginx_at.append(nginx)
    check = checked(inventory(tmp_path, http=nginx.port))["web: http via nginx reaches alpha"]
    assert not check.passed
    assert check.hint == "nothing answers at 127.0.0.1:20080 on main: the tunnel is down; check the Pi's pitunnel@main.service"


def test_verify_reads_each_vps_firewall_and_names_the_rule_that_blocks_a_public_port(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    inv = inventory(tmp_path, ssh=port)
    pi = pi_host("alpha", unit_says("enabled", "active", "active"))
    own = at(inv, inv.pis["alpha"])
    pi.target, pi.authenticate = own.target, own.authenticate  # type: ignore[attr-defined]
    main = FakeHost("main", [("ss -Htln", f"LISTEN 0 128 0.0.0.0:{port} 0.0.0.0:*\n"), ("echo @@ufw", UFW)])
    backup = FakeHost("backup")
    for vps in (main, backup):  # no channel opens through them (alpha's hidden tunnel)
        vps.connection = connection_of(Channels(None))  # type: ignore[method-assign]
    play = play_on(inv, {"main": main, "backup": backup, "alpha": pi})
    play.reporter.heartbeat_after = 0  # the line a slow verify prints for the Pi, at once
    first, second = verify.verify(play)
    assert (first.vps, second.vps) == ("main", "backup")
    assert {c.name: c.hint for c in first.checks}["ssh: ssh lands on alpha"] == (
        f"127.0.0.1:{port} ([Errno 111] Connection refused): main listens, but its host firewall blocks it: ufw: "
        "default deny (incoming); rerun provision-vps (firewall: auto opens it)")
    assert {c.name: c.hint for c in second.checks}["ssh: ssh lands on alpha"] == nothing_at(port, "backup")
    assert "alpha verify: probes through the VPS (0s)" in " ".join(capsys.readouterr().out.split())


# ------------------------------------------------------------------------------ the three causes, alone


def test_a_port_the_laptop_reaches_needs_no_hint(tmp_path: Path, listening: int) -> None:
    vps = inventory(tmp_path).vps["main"]
    assert reach.unreachable(vps, listening, frozenset(), None) is None


def test_a_port_open_on_the_vps_address_only_is_reached_there(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        s.listen(1)
        port = s.getsockname()[1]
        vps = inventory(tmp_path.joinpath()).vps["main"]
        vps = type(vps)(**{**vps.__dict__, "address": "127.0.0.2"})
        assert reach.unreachable(vps, port, frozenset(), None) is None


def test_an_ipv6_listener_counts_and_no_host_firewall_blames_one_outside_the_vps(tmp_path: Path) -> None:
    vps, port = inventory(tmp_path).vps["main"], free_port()
    assert reach.unreachable(vps, port, frozenset({f"[::]:{port}"}), None) == (
        f"127.0.0.1:{port} ([Errno 111] Connection refused): main listens and no host firewall on it blocks port "
        f"{port}, yet the laptop cannot reach it: a firewall outside the VPS drops it (the provider's security "
        f"group, security list or cloud firewall): open {port}/tcp there")
    open_iptables = host_firewall(IPTABLES.replace("-j REJECT", "-j ACCEPT"))
    assert "a firewall outside the VPS drops it" in (reach.unreachable(vps, port, frozenset({f"[::]:{port}"}),
                                                                       open_iptables) or "")


def test_the_fix_for_a_host_firewall_is_provision_only_where_pitunnel_may_open_it(tmp_path: Path) -> None:
    port = free_port()
    present = frozenset({f"0.0.0.0:{port}"})
    auto, leave = inventory(tmp_path).vps["main"], inventory(tmp_path, extra=", firewall: leave").vps["main"]
    ufw = host_firewall(UFW)
    assert (reach.unreachable(auto, port, present, ufw) or "").endswith("; rerun provision-vps (firewall: auto opens it)")
    assert (reach.unreachable(leave, port, present, ufw) or "").endswith(f"; open {port}/tcp in ufw")
    users_deny = host_firewall(UFW.replace("8080/tcp                   DENY IN", f"{port}/tcp{' ' * (23 - len(str(port)))}DENY IN"))
    assert (reach.unreachable(auto, port, present, users_deny) or "").endswith(f"; open {port}/tcp in ufw")


def test_a_port_that_never_answers_is_given_up_after_the_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reach, "CONNECT_SECONDS", 0.2)
    with socket.socket() as full:  # a backlog already full: the kernel drops the next SYN, connect waits
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):  # the one the backlog holds
            assert reach.connects("127.0.0.1", port) == "timed out"


def test_a_port_that_answers_an_old_ssh_version_is_no_landing_and_says_what_it_said(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"SSH-1.5-old\r\n")
                conn.recv(1024)

        threading.Thread(target=answer, daemon=True).start()
        check = checked(inventory(tmp_path, ssh=port))["ssh: ssh lands on alpha"]
    assert (check.passed, check.detail) == (False, f"127.0.0.1:{port}: Incompatible version (1.5 instead of 2.0)")
    assert check.hint == "the tunnel reached an sshd but login failed: was the laptop key pushed?"
