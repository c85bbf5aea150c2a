"""Unit tests for pitunnel.inventory and pitunnel.yamlsrc (pure: tmp_path only)."""

from __future__ import annotations

import base64
import os
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitunnel import yamlsrc
from pitunnel.inventory import (
    LETS_ENCRYPT,
    DEFAULTS_KEYS,
    PI_FIELDS,
    SECTION_FIELDS,
    SETTINGS_FIELDS,
    TUNNEL_FIELDS,
    VPS_FIELDS,
    Inventory,
    InventoryError,
    PiSpec,
    Problem,
    TunnelSpec,
    allocate_ports,
    load_inventory,
    ports_file,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example.yml"
HOST_KEY = "ssh-ed25519 " + base64.b64encode(
    b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))).decode()
RSA_BLOB_AS_ED25519 = "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa" + bytes(20)).decode()


def yml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def write(directory: Path, text: str, name: str = "hosts.yml") -> Path:
    path = directory / name
    path.write_text(yml(text))
    return path


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME, so ~ and the laptop_key default never see the real one."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


def touch(path: Path) -> Path:
    """A file holding one line, as a password file does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("secret\n")
    return path


# ---------------------------------------------------------------------------
# Malformed inventories: (YAML, dotted key, line, words in message or fix)

MINIMAL_PIS = """
        pis:
          pi1:
            address: 192.168.1.50
        """

MALFORMED: list[tuple[str, str, str, int | None, str]] = [
    ("syntax-error", """
        vps:
          main:
            address: vps.example.com
           port: 22
        """, "", 4, "YAML syntax error"),
    ("unclosed-bracket", """
        vps:
          main: {address: vps.example.com
        pis: {}
        """, "", 3, "YAML syntax error"),
    ("top-level-list", """
        - vps
        - pis
        """, "", 1, "top level"),
    ("empty-file", "\n", "", None, "empty"),
    ("duplicate-key", """
        vps:
          main:
            address: vps.example.com
            port: 2222
            port: 22
        """, "vps.main.port", 5, "lines 4 and 5"),
    ("duplicate-host", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
          pi1:
            address: 10.0.0.2
        """, "pis.pi1", 7, "lines 5 and 7"),
    ("unknown-top-key", """
        vps:
          main:
            address: vps.example.com
        pi:
          pi1:
            address: 10.0.0.1
        """, "pi", 4, "did you mean 'pis'"),
    ("unknown-host-key", """
        vps:
          main:
            adress: vps.example.com
        """, "vps.main.adress", 3, "did you mean 'address'"),
    ("unknown-tunnel-key", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              ssh:
                type: ssh
                remote_prot: 20000
        """, "pis.pi1.tunnels.ssh.remote_prot", 10, "did you mean 'remote_port'"),
    ("unknown-settings-key", """
        settings:
          known_host: ~/.ssh/known_hosts
        vps:
          main:
            address: vps.example.com
        """, "settings.known_host", 2, "did you mean 'known_hosts'"),
    ("role-section-in-defaults", """
        defaults:
          pi:
            user: pi
        vps:
          main:
            address: vps.example.com
        """, "defaults.pi", 2, "valid keys here are port, user"),
    ("host-only-key-in-defaults", """
        defaults:
          tunnel_user: pitunnel
        vps:
          main:
            address: vps.example.com
        """, "defaults.tunnel_user", 2, "valid keys here"),
    ("port-is-boolean", """
        vps:
          main:
            address: vps.example.com
            port: yes
        """, "vps.main.port", 4, "booleans in YAML"),
    ("port-is-string", """
        vps:
          main:
            address: vps.example.com
            port: "22"
        """, "vps.main.port", 4, "without quotes"),
    ("port-too-big", """
        vps:
          main:
            address: vps.example.com
            port: 70000
        """, "vps.main.port", 4, "from 1 to 65535"),
    ("port-zero", """
        vps:
          main:
            address: vps.example.com
            http_port: 0
        """, "vps.main.http_port", 4, "from 1 to 65535"),
    ("port-null", """
        vps:
          main:
            address: vps.example.com
            port:
        """, "vps.main.port", 4, "default 22"),
    ("bad-default-port", """
        defaults:
          port: twenty-two
        vps:
          main:
            address: vps.example.com
        """.rstrip(" ") + MINIMAL_PIS.lstrip("\n"), "defaults.port", 2, "whole number"),
    ("missing-address", """
        vps:
          main:
            port: 22
        """, "vps.main.address", 2, "add 'address:"),
    ("missing-tunnel-type", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              ssh:
                local_port: 22
        """, "pis.pi1.tunnels.ssh.type", 8, "add 'type: ssh'"),
    ("bad-tunnel-type", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              ssh: {type: tcp}
        """, "pis.pi1.tunnels.ssh.type", 8, "one of: ssh, http"),
    ("no-vps-at-all", """
        pis:
          pi1:
            address: 10.0.0.1
        """, "vps", 1, "add one under 'vps:'"),
    ("empty-vps-section", """
        vps: {}
        pis:
          pi1:
            address: 10.0.0.1
        """, "vps", 1, "add one under 'vps:'"),
    ("pis-is-a-list", """
        vps:
          main:
            address: vps.example.com
        pis:
          - address: 10.0.0.1
        """, "pis", 4, "expected a mapping"),
    ("host-is-a-string", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1: 10.0.0.1
        """, "pis.pi1", 5, "expected a mapping"),
    ("unknown-vps", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            vps: mian
        """, "pis.pi1.vps", 7, "did you mean 'main'"),
    ("vps-omitted-with-two", """
        vps:
          east:
            address: east.example.com
          west:
            address: west.example.com
        pis:
          pi1:
            address: 10.0.0.1
        """, "pis.pi1.vps", 7, "east, west"),
    ("bad-host-name", """
        vps:
          main:
            address: vps.example.com
        pis:
          Pi_1:
            address: 10.0.0.1
        """, "pis.Pi_1", 5, "'pi-1'"),
    ("bad-tunnel-name", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              web.app: {type: http}
        """, "pis.pi1.tunnels.web.app", 8, "lowercase letters"),
    ("name-used-twice", """
        vps:
          box:
            address: vps.example.com
        pis:
          box:
            address: 10.0.0.1
        """, "pis.box", 5, "its own name"),
    ("bad-user", """
        vps:
          main:
            address: vps.example.com
            user: Admin
        """, "vps.main.user", 4, "lowercase letters"),
    ("user-is-number", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            user: 1000
        """, "pis.pi1.user", 7, "expected text"),
    ("vps-tunnel-user-root", """
        vps:
          main:
            address: vps.example.com
            tunnel_user: root
        """, "vps.main.tunnel_user", 4, "unprivileged"),
    ("pi-tunnel-user-root", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnel_user: root
        """, "pis.pi1.tunnel_user", 7, "unprivileged"),
    ("remote-port-privileged", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              ssh: {type: ssh, remote_port: 80}
        """, "pis.pi1.tunnels.ssh.remote_port", 8, "1024 to 65535"),
    ("remote-port-bad-word", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              ssh:
                type: ssh
                remote_port: automatic
        """, "pis.pi1.tunnels.ssh.remote_port", 10, "or auto"),
    ("remote-port-clash-across-pis", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              ssh: {type: ssh, remote_port: 12346}
          pi2:
            address: 10.0.0.2
            tunnels:
              ssh: {type: ssh, remote_port: 12346}
        """, "pis.pi2.tunnels.ssh.remote_port", 12, "pis.pi1.tunnels.ssh.remote_port (line 8)"),
    ("remote-port-is-vps-ssh-port", """
        vps:
          main:
            address: vps.example.com
            port: 12345
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              ssh: {type: ssh, remote_port: 12345}
        """, "pis.pi1.tunnels.ssh.remote_port", 9, "vps.main.port (line 4)"),
    ("remote-port-is-https-port", """
        vps:
          main:
            address: vps.example.com
            https_port: 8443
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              ssh: {type: ssh, remote_port: 8443}
        """, "pis.pi1.tunnels.ssh.remote_port", 9, "vps.main.https_port"),
    ("remote-port-is-default-http-port", """
        vps:
          main:
            address: vps.example.com
            http_port: 8080
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              web: {type: http, remote_port: 8080}
        """, "pis.pi1.tunnels.web.remote_port", 9, "vps.main.http_port"),
    ("http-and-https-port-equal", """
        vps:
          main:
            address: vps.example.com
            http_port: 8080
            https_port: 8080
        """, "vps.main.https_port", 5, "different values"),
    ("port-range-reversed", """
        vps:
          main:
            address: vps.example.com
            port_range: [30000, 20000]
        """, "vps.main.port_range", 4, "[low, high]"),
    ("port-range-privileged", """
        vps:
          main:
            address: vps.example.com
            port_range: [80, 1000]
        """, "vps.main.port_range", 4, "1024 <= low"),
    ("port-range-string", """
        vps:
          main:
            address: vps.example.com
            port_range: 20000-29999
        """, "vps.main.port_range", 4, "[20000, 29999]"),
    ("port-range-exhausted", """
        vps:
          main:
            address: vps.example.com
            port_range: [20000, 20000]
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              a: {type: ssh}
              b: {type: ssh}
        """, "pis.pi1.tunnels.b.remote_port", 10, "widen vps.main.port_range"),
    ("http-route-clash", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              web: {type: http, path: /app/}
          pi2:
            address: 10.0.0.2
            tunnels:
              web:
                type: http
                path: /app/
        """, "pis.pi2.tunnels.web.path", 14, "pis.pi1.tunnels.web (line 8)"),
    ("interval-zero", """
        vps:
          main:
            address: vps.example.com
            client_alive_interval: 0
        """, "vps.main.client_alive_interval", 4, "1 or more"),
    ("count-negative", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            server_alive_count_max: -1
        """, "pis.pi1.server_alive_count_max", 7, "1 or more"),
    ("keepalive-unknown", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            keepalive: sometimes
        """, "pis.pi1.keepalive", 7, "metered, default, fast"),
    ("connect-timeout-string", """
        vps:
          main:
            address: vps.example.com
            connect_timeout: fast
        """, "vps.main.connect_timeout", 4, "number of seconds"),
    ("address-bad-characters", """
        vps:
          main:
            address: my_vps!
        """, "vps.main.address", 3, "DNS name"),
    ("address-bad-ipv4", """
        vps:
          main:
            address: 256.1.1.1
        """, "vps.main.address", 3, "IPv4"),
    ("address-bracketed-ipv6", """
        vps:
          main:
            address: "[2001:db8::1]"
        """, "vps.main.address", 3, "without brackets"),
    ("host-key-without-type", f"""
        vps:
          main:
            address: vps.example.com
            host_key: {HOST_KEY.split()[1]}
        """, "vps.main.host_key", 4, "'<type> <base64>'"),
    ("host-key-bad-base64", """
        vps:
          main:
            address: vps.example.com
            host_key: ssh-ed25519 AAAA%%%
        """, "vps.main.host_key", 4, "malformed"),
    ("host-key-type-mismatch", f"""
        vps:
          main:
            address: vps.example.com
            host_key: {RSA_BLOB_AS_ED25519}
        """, "vps.main.host_key", 4, "not a ssh-ed25519 key"),
    ("key-file-missing", """
        vps:
          main:
            address: vps.example.com
            key: ~/.ssh/nope
        """, "vps.main.key", 4, "does not exist"),
    ("password-file-missing", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            password_file: secrets/pi1
        """, "pis.pi1.password_file", 7, "relative paths start at the inventory's folder"),
    ("sudo-password-file-missing-in-defaults", """
        defaults:
          sudo_password_file: /nonexistent/sudo
        vps:
          main:
            address: vps.example.com
        """.rstrip(" ") + MINIMAL_PIS.lstrip("\n"), "defaults.sudo_password_file", 2, "does not exist"),
    ("basic-auth-file-missing", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              web:
                type: http
                basic_auth_file: web.htpasswd
        """, "pis.pi1.tunnels.web.basic_auth_file", 10, "does not exist"),
    ("laptop-key-missing", """
        settings:
          laptop_key: ~/.ssh/missing
        vps:
          main:
            address: vps.example.com
        """, "settings.laptop_key", 2, "does not exist"),
    ("public-http-tunnel", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              web:
                type: http
                public: true
        """, "pis.pi1.tunnels.web.public", 10, "remove 'public: true'"),
    ("public-is-string", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              ssh: {type: ssh, public: "yes"}
        """, "pis.pi1.tunnels.ssh.public", 8, "true or false"),
    ("path-without-trailing-slash", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              web:
                type: http
                path: /pi1/web
        """, "pis.pi1.tunnels.web.path", 10, "start and end with '/'"),
    ("server-name-with-space", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              web:
                type: http
                server_name: my pi.example.com
        """, "pis.pi1.tunnels.web.server_name", 10, "*.example.com"),
    ("tls-certificate-without-key", """
        vps:
          main:
            address: vps.example.com
            tls_certificate: /etc/ssl/cert.pem
        """, "vps.main.tls_key", 2, "both tls_certificate and tls_key"),
    ("tls-relative-path", """
        vps:
          main:
            address: vps.example.com
            tls_certificate: cert.pem
            tls_key: /etc/ssl/key.pem
        """, "vps.main.tls_certificate", 4, "absolute path on the VPS"),
    ("disable-password-login-string", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            disable_password_login: "true"
        """, "pis.pi1.disable_password_login", 7, "without quotes"),
    ("tunnels-is-a-list", """
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnels: [ssh]
        """, "pis.pi1.tunnels", 7, "expected a mapping"),
]


@pytest.mark.parametrize(("text", "key", "line", "words"), [case[1:] for case in MALFORMED],
                         ids=[case[0] for case in MALFORMED])
def test_malformed_inventory_names_key_line_and_fix(tmp_path: Path, text: str, key: str, line: int | None,
                                                    words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path, save_allocations=False)
    error = caught.value
    report = str(error)
    found = [p for p in error.problems if p.key == key and p.line == line]
    assert found, f"no problem at {key!r} line {line} in:\n{report}"
    problem = found[0]
    assert problem.file == path and problem.fix
    assert words.lower() in f"{problem.message} {problem.fix}".lower(), report
    where = f"{path}:{line}:" if line is not None else f"{path}: "
    assert f"{where}" in report and (f": {key}: " in report if key else True)
    assert str(problem) in report and ". Fix: " in str(problem)
    assert report.splitlines()[0].startswith(f"{path}: {len(error.problems)} problem")
    assert not ports_file(path).exists()


def test_there_are_enough_malformed_cases() -> None:
    assert len(MALFORMED) >= 35


# ---------------------------------------------------------------------------
# Problem / error formatting


def test_problem_str_format() -> None:
    problem = Problem(Path("inventory/hosts.yml"), 12, 5, "pis.pi1.tunnels.ssh.remote_port",
                      "70000 is out of range", "use a port from 1024 to 65535")
    assert str(problem) == ("inventory/hosts.yml:12:5: pis.pi1.tunnels.ssh.remote_port: "
                            "70000 is out of range. Fix: use a port from 1024 to 65535.")
    assert str(Problem(Path("h.yml"), None, None, "", "cannot read", "check it")) == "h.yml: cannot read. Fix: check it."


def test_all_problems_reported_at_once_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, """
        vps:
          main:
            address: vps.example.com
            port: yes
        pis:
          pi1:
            address: 10.0.0.1
            user: Pi
            tunnels:
              ssh: {type: ssh, remote_port: 70000}
              web: {type: http, public: true}
          pi2:
            adress: 10.0.0.2
        """)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    problems = caught.value.problems
    assert [(p.key, p.line) for p in problems] == [
        ("vps.main.port", 4),
        ("pis.pi1.user", 8),
        ("pis.pi1.tunnels.ssh.remote_port", 10),
        ("pis.pi1.tunnels.web.public", 11),
        ("pis.pi2", 12),  # no address (optional since enrolment), and no ssh tunnel to reach it by
        ("pis.pi2.adress", 13),
    ]
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: 6 problems found:"
    assert len(lines) == 7


def test_defaults_problem_reported_once(tmp_path: Path) -> None:
    path = write(tmp_path, """
        defaults:
          connect_timeout: -1
        vps:
          main:
            address: vps.example.com
        pis:
          pi1: {address: 10.0.0.1}
          pi2: {address: 10.0.0.2}
        """)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert [(p.key, p.line) for p in caught.value.problems] == [("defaults.connect_timeout", 2)]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "nope.yml")
    assert "cannot read the inventory" in str(caught.value)


def test_a_missing_inventory_says_why_and_where_to_start(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert str(caught.value) == (f"{path}: 1 problem found:\n{path}: cannot read the inventory: No such file or "
                                 "directory. Fix: check the path, or start from inventory/example.yml.")


def refusal(path: Path) -> list[str]:
    """The problem lines of the inventory at `path`, which must be refused."""
    with pytest.raises(InventoryError) as caught:
        load_inventory(path, save_allocations=False)
    return [str(p) for p in caught.value.problems]


LOGIN_CLASH = ("vps.{vps}.tunnel_user: the tunnel account '{user}' is also the login user. Fix: give the tunnels an "
               "account of their own (tunnel_user: {other}), or log in as another user.")


@pytest.mark.parametrize(("text", "problems"), [
    pytest.param("- vps\n- pis\n", ["1:1: expected a mapping at the top level, got a list. Fix: use the top-level "
                                    "keys settings, defaults, vps and pis (see inventory/example.yml)."],
                 id="top-level-list"),
    pytest.param("pis: {}\n", ["1:1: vps: no VPS is defined. Fix: add one under 'vps:', "
                               "e.g. 'vps: {main: {address: vps.example.com}}'."], id="no-vps"),
    pytest.param("""
        vps:
          main:
            address:
        """, ["3:13: vps.main.address: has no value. Fix: write 'address: <IP address or DNS name>'."],
                 id="required-key-without-value"),
    pytest.param("""
        vps:
          main:
            address: vps.example.com
            tls_certificate: /etc/ssl/cert.pem
          other:
            address: vps2.example.com
            tls_key: /etc/ssl/key.pem
        """, ["2:3: vps.main.tls_key: 'tls_key' is missing while 'tls_certificate' is set. "
              "Fix: set both tls_certificate and tls_key, or neither.",
              "5:3: vps.other.tls_certificate: 'tls_certificate' is missing while 'tls_key' is set. "
              "Fix: set both tls_certificate and tls_key, or neither."], id="half-a-tls-pair"),
    pytest.param("""
        vps:
          main:
            address: vps.example.com
            user: pitunnel
          other:
            address: vps2.example.com
            user: ops
            tunnel_user: ops
        """, ["2:3: " + LOGIN_CLASH.format(vps="main", user="pitunnel", other="tunnel"),
              "8:18: " + LOGIN_CLASH.format(vps="other", user="ops", other="pitunnel")],
                 id="tunnel-account-is-the-login-user"),
    pytest.param("""
        defaults:
          via: direct
        vps: {main: {address: vps.example.com}}
        pis:
          pi1:
            tunnels: {ssh: {type: ssh}}
        """, ["2:8: defaults.via: 'via: direct' needs the address of pi1, and it has none. "
              "Fix: give it an address, or use 'via: tunnel' (or leave via out)."],
                 id="via-direct-from-defaults-without-address"),
    pytest.param("""
        vps: {main: {address: vps.example.com}}
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              ssh:
                type: ssh
                server_name: pi1.example.com
        """, ["8:9: pis.pi1.tunnels.ssh.server_name: 'server_name' only applies to http tunnels. "
              "Fix: remove it, or make this an http tunnel with 'type: http'."], id="http-key-on-an-ssh-tunnel"),
])
def test_a_refused_inventory_reads_in_full_placed_at_its_line_and_column(tmp_path: Path, text: str,
                                                                         problems: list[str]) -> None:
    path = write(tmp_path, text)
    assert refusal(path) == [f"{path}:{problem}" for problem in problems]


def test_a_pis_tunnel_account_may_be_its_login_user_given_under_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, """
        defaults:
          user: admin
        vps:
          main:
            address: vps.example.com
        pis:
          pi1:
            address: 10.0.0.1
            tunnel_user: admin
        """)
    pi = load_inventory(path, save_allocations=False).pis["pi1"]
    assert (pi.user, pi.tunnel_user) == ("admin", "admin")


def test_a_lock_file_that_is_not_a_regular_file_is_a_problem_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "vps: {main: {address: vps.example.com}}\n")
    lock = ports_file(path)
    os.mkfifo(lock)
    assert refusal(path) == [f"{lock}: is not a regular file. Fix: delete it to reallocate (tunnels with "
                             "remote_port: auto may then get new ports)."]


# ---------------------------------------------------------------------------
# Valid inventories


def test_defaults_and_role_defaults_applied(tmp_path: Path, home: Path) -> None:
    touch(home / ".ssh" / "lab_key")
    path = write(tmp_path, """
        defaults:
          port: 2222
          key: ~/.ssh/lab_key
          connect_timeout: 3
        vps:
          main:
            address: 203.0.113.10
            port: 12345
        pis:
          pi1:
            address: pi1.local
            key: null
            tunnels:
              ssh: {type: ssh}
              web: {type: http}
              cam: {type: http, server_name: cam.example.com}
        """)
    inventory = load_inventory(path)
    vps, pi = inventory.vps["main"], inventory.pis["pi1"]
    assert (vps.port, vps.user, vps.key, vps.connect_timeout) == (12345, "root", home / ".ssh" / "lab_key", 3.0)
    assert (pi.port, pi.user, pi.key, pi.connect_timeout) == (2222, "pi", None, 3.0)
    assert (vps.tunnel_user, vps.http_port, vps.https_port, vps.port_range) == ("pitunnel", 80, 443, (20000, 29999))
    assert (vps.client_alive_interval, vps.client_alive_count_max, vps.tls_certificate) == (5, 2, None)
    assert (pi.first_vps, pi.tunnel_user, pi.server_alive_interval, pi.server_alive_count_max) == ("main", "pitunnel", 10, 2)
    assert pi.disable_password_login is False and pi.host_key is None and pi.password_file is None
    ssh, web, cam = pi.tunnels
    assert ssh == TunnelSpec(name="ssh", kind="ssh", local_port=22, remote_port=20000, public=False,
                             server_name=None, path=None, basic_auth_file=None, ports=(("main", 20000),))
    assert (web.local_port, web.path, web.server_name) == (80, "/pi1/web/", None)
    assert (cam.path, cam.server_name) == (None, "cam.example.com")
    assert inventory.settings.known_hosts == home / ".ssh" / "known_hosts"
    assert inventory.settings.laptop_key is None  # ~/.ssh/id_ed25519 does not exist


def test_laptop_key_default_found_when_it_exists(tmp_path: Path, home: Path) -> None:
    key = touch(home / ".ssh" / "id_ed25519")
    touch(home / ".ssh" / "id_ed25519.pub")
    path = write(tmp_path, "vps: {main: {address: vps.example.com}}\n")
    assert load_inventory(path).settings.laptop_key == key
    path.write_text("settings: {laptop_key: null}\nvps: {main: {address: vps.example.com}}\n")
    assert load_inventory(path).settings.laptop_key is None


@pytest.mark.parametrize("half", ["id_ed25519", "id_ed25519.pub"])
def test_laptop_key_default_needs_both_halves(tmp_path: Path, home: Path, half: str) -> None:
    touch(home / ".ssh" / half)
    path = write(tmp_path, "vps: {main: {address: vps.example.com}}\n")
    assert load_inventory(path).settings.laptop_key is None


def test_tilde_and_relative_paths(tmp_path: Path, home: Path) -> None:
    folder = tmp_path / "inventory"
    folder.mkdir()
    touch(home / "keys" / "vps")
    touch(folder / "secrets" / "pi-password")
    touch(folder / "web.htpasswd")
    touch(tmp_path / "laptop")
    touch(tmp_path / "laptop.pub")
    path = write(folder, """
        settings:
          known_hosts: known_hosts
          laptop_key: ../laptop
        vps:
          main: {address: vps.example.com, key: ~/keys/vps, tls_certificate: /c.pem, tls_key: /k.pem}
        pis:
          pi1:
            address: 10.0.0.1
            password_file: secrets/pi-password
            tunnels:
              web: {type: http, basic_auth_file: ./web.htpasswd}
        """)
    inventory = load_inventory(path)
    assert inventory.vps["main"].key == home / "keys" / "vps"
    assert inventory.pis["pi1"].password_file == folder.resolve() / "secrets" / "pi-password"
    assert inventory.pis["pi1"].tunnels[0].basic_auth_file == folder.resolve() / "web.htpasswd"
    assert inventory.settings.known_hosts == folder.resolve() / "known_hosts"
    assert inventory.settings.laptop_key is not None and inventory.settings.laptop_key.resolve() == tmp_path / "laptop"


def test_inventory_helpers(tmp_path: Path) -> None:
    path = write(tmp_path, """
        vps:
          east: {address: east.example.com}
          west: {address: west.example.com}
        pis:
          pi1:
            address: 10.0.0.1
            vps: west
            tunnels: {ssh: {type: ssh}}
          pi2: {address: 10.0.0.2, vps: east}
          pi3:
            address: 10.0.0.3
            vps: west
            tunnels: {ssh: {type: ssh}, web: {type: http}}
        """)
    inventory = load_inventory(path)
    assert [h.name for h in inventory.hosts()] == ["east", "west", "pi1", "pi2", "pi3"]
    assert [h.role for h in inventory.hosts()] == ["vps", "vps", "pi", "pi", "pi"]
    assert inventory.host("pi2") is inventory.pis["pi2"] and inventory.host("east") is inventory.vps["east"]
    with pytest.raises(KeyError):
        inventory.host("nope")
    assert inventory.vps_of(inventory.pis["pi1"].first_path).name == "west"
    assert [(p.name, t.name) for p, t in inventory.tunnels_on(inventory.vps["west"])] == [
        ("pi1", "ssh"), ("pi3", "ssh"), ("pi3", "web")]
    assert inventory.tunnels_on(inventory.vps["east"]) == []
    with pytest.raises(TypeError):
        inventory.pis["pi9"] = inventory.pis["pi1"]  # type: ignore[index]


def test_ipv6_address_and_wildcard_server_name(tmp_path: Path) -> None:
    path = write(tmp_path, """
        vps:
          main: {address: "2001:db8::1", host_key: HOSTKEY}
        pis:
          pi1:
            address: raspberrypi.local
            tunnels: {web: {type: http, server_name: "*.example.com", path: /}}
        """.replace("HOSTKEY", HOST_KEY + " root@vps"))
    inventory = load_inventory(path)
    assert inventory.vps["main"].address == "2001:db8::1"
    assert inventory.vps["main"].host_key == HOST_KEY  # comment dropped
    assert inventory.pis["pi1"].tunnels[0].server_name == "*.example.com"


# ---------------------------------------------------------------------------
# Port allocation


def ports_of(inventory: Inventory) -> dict[str, int]:
    return {f"{pi.name}/{t.name}": t.remote_port for pi in inventory.pis.values() for t in pi.tunnels}


def test_allocation_stable_when_a_pi_sorting_first_is_added(tmp_path: Path) -> None:
    vps = "vps:\n  main: {address: vps.example.com, port_range: [20000, 20100]}\npis:\n"
    zeta = "  zeta:\n    address: 10.0.0.2\n    tunnels: {ssh: {type: ssh}, web: {type: http}}\n"
    alpha = "  alpha:\n    address: 10.0.0.1\n    tunnels: {ssh: {type: ssh}}\n"
    path = tmp_path / "hosts.yml"
    path.write_text(vps + zeta)
    assert ports_of(load_inventory(path)) == {"zeta/ssh": 20000, "zeta/web": 20001}
    assert yaml.safe_load(ports_file(path).read_text()) == {"main": {"zeta/ssh": 20000, "zeta/web": 20001}}

    path.write_text(vps + alpha + zeta)
    assert ports_of(load_inventory(path)) == {"alpha/ssh": 20002, "zeta/ssh": 20000, "zeta/web": 20001}

    path.write_text(vps + alpha)  # zeta removed: its entries are dropped, alpha keeps its port
    assert ports_of(load_inventory(path)) == {"alpha/ssh": 20002}
    assert yaml.safe_load(ports_file(path).read_text()) == {"main": {"alpha/ssh": 20002}}

    path.write_text(vps + alpha + zeta)  # zeta back: lowest free ports again
    assert ports_of(load_inventory(path)) == {"alpha/ssh": 20002, "zeta/ssh": 20000, "zeta/web": 20001}


def test_allocation_skips_explicit_and_vps_ports(tmp_path: Path) -> None:
    path = write(tmp_path, """
        vps:
          main: {address: vps.example.com, port: 20000, http_port: 20002, port_range: [20000, 20010]}
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              a: {type: ssh, remote_port: 20001}
              b: {type: ssh}
              c: {type: ssh, remote_port: auto}
        """)
    assert ports_of(load_inventory(path)) == {"pi1/a": 20001, "pi1/b": 20003, "pi1/c": 20004}


def test_allocation_skips_the_metrics_port(tmp_path: Path) -> None:
    """`auto` never gives out the node exporter's port (even when it was recorded for a tunnel before
    metrics were turned on); without `metrics: true` nothing listens there and the port is free."""
    text = """
        vps:
          main: {address: vps.example.com, port_range: [20000, 20010], metrics: true,
                 metrics_address: "127.0.0.1:20001"}
        pis:
          pi1: {address: 10.0.0.1, tunnels: {a: {type: ssh}, b: {type: http}, c: {type: http}}}
        """
    path = write(tmp_path, text)
    assert ports_of(load_inventory(path)) == {"pi1/a": 20000, "pi1/b": 20002, "pi1/c": 20003}
    ports_file(path).write_text("main: {pi1/a: 20000, pi1/b: 20001, pi1/c: 20002}\n")
    assert ports_of(load_inventory(path)) == {"pi1/a": 20000, "pi1/b": 20003, "pi1/c": 20002}
    path = write(tmp_path, text.replace("metrics: true", "metrics: false"), name="off.yml")
    assert ports_of(load_inventory(path)) == {"pi1/a": 20000, "pi1/b": 20001, "pi1/c": 20002}


def test_allocation_of_same_port_everywhere_skips_the_metrics_port(tmp_path: Path) -> None:
    path = write(tmp_path, """
        vps:
          main: {address: vps.example.com, port_range: [20000, 20010]}
          backup: {address: vps2.example.com, port_range: [20000, 20010], metrics: true,
                   metrics_address: "10.0.0.9:20000"}
        pis:
          pi1: {address: 10.0.0.1, vps: [main, backup], same_port_everywhere: true, tunnels: {a: {type: ssh}}}
        """)
    pi = load_inventory(path).pis["pi1"]
    assert pi.tunnels[0].ports == (("main", 20001), ("backup", 20001))


def test_recorded_port_taken_by_an_explicit_port_is_reallocated(tmp_path: Path) -> None:
    path = write(tmp_path, """
        vps: {main: {address: vps.example.com}}
        pis:
          pi1: {address: 10.0.0.1, tunnels: {ssh: {type: ssh}, web: {type: http}}}
        """)
    ports_file(path).write_text("main:\n  pi1/ssh: 20005\n  pi1/web: 25000\n  gone/ssh: 20000\n")
    assert ports_of(load_inventory(path)) == {"pi1/ssh": 20005, "pi1/web": 25000}
    path.write_text(path.read_text().replace("{type: http}", "{type: http, remote_port: 20005}"))
    assert ports_of(load_inventory(path)) == {"pi1/ssh": 20000, "pi1/web": 20005}
    assert yaml.safe_load(ports_file(path).read_text()) == {"main": {"pi1/ssh": 20000}}


def test_lock_file_not_written_in_check_mode(tmp_path: Path) -> None:
    path = write(tmp_path, """
        vps: {main: {address: vps.example.com}}
        pis: {pi1: {address: 10.0.0.1, tunnels: {ssh: {type: ssh}}}}
        """)
    assert ports_of(load_inventory(path, save_allocations=False)) == {"pi1/ssh": 20000}
    assert not ports_file(path).exists()
    assert ports_of(load_inventory(path, allocate=False)) == {"pi1/ssh": 20000}
    assert not ports_file(path).exists()
    load_inventory(path)
    assert ports_file(path).exists()


def test_lock_file_not_rewritten_when_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path, """
        vps: {main: {address: vps.example.com}}
        pis: {pi1: {address: 10.0.0.1, tunnels: {ssh: {type: ssh, remote_port: 12346}}}}
        """)
    load_inventory(path)
    assert not ports_file(path).exists()  # nothing to allocate, nothing to record
    path.write_text(path.read_text().replace("12346", "auto"))
    load_inventory(path)
    lock = ports_file(path)
    lock.write_text("# hand-made\nmain: {pi1/ssh: 20000}\n")
    load_inventory(path)
    assert lock.read_text() == "# hand-made\nmain: {pi1/ssh: 20000}\n"


@pytest.mark.parametrize(("content", "line"), [
    ("main: {pi1/ssh: 20000\n", 2),
    ("main:\n  pi1/ssh: 20000\n  pi1/ssh: 20001\n", 3),
    ("main:\n  pi1/ssh: lots\n", 2),
    ("- 20000\n", 1),
])
def test_bad_lock_file_is_a_problem(tmp_path: Path, content: str, line: int) -> None:
    path = write(tmp_path, "vps: {main: {address: vps.example.com}}\npis: {pi1: {address: 10.0.0.1}}\n")
    lock = ports_file(path)
    lock.write_text(content)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    [problem] = caught.value.problems
    assert problem.file == lock and problem.line == line
    assert "delete it to reallocate" in problem.fix
    assert lock.read_text() == content  # never overwritten


def test_allocate_ports_function() -> None:
    from pitunnel.inventory import VpsSpec
    vps = VpsSpec(name="v", role="vps", address="v.example.com", port=22, user="root", key=None, password_file=None,
                  sudo_password_file=None, host_key=None, connect_timeout=10.0, port_range=(1024, 1026))
    ports, unplaced = allocate_ports(vps, {1025}, ["a/x", "b/x", "c/x"], {"b/x": 1024, "c/x": 1025})
    assert ports == {"a/x": 1026, "b/x": 1024} and unplaced == ["c/x"]


def test_ports_file_name() -> None:
    assert ports_file(Path("inventory/hosts.yml")) == Path("inventory/hosts.ports.yml")
    assert ports_file(Path("lab.yaml")) == Path("lab.ports.yml")


# ---------------------------------------------------------------------------
# The example inventory


def walk_schema(data: dict[str, Any]) -> list[str]:
    """Dotted paths of keys in `data` that the schema does not know."""
    unknown: list[str] = []

    def check(mapping: Any, valid: Any, where: str) -> None:
        unknown.extend(f"{where}{key}" for key in mapping if key not in valid)

    check(data, SECTION_FIELDS, "")
    check(data.get("settings") or {}, SETTINGS_FIELDS, "settings.")
    check(data.get("defaults") or {}, DEFAULTS_KEYS, "defaults.")
    for name, host in (data.get("vps") or {}).items():
        check(host, VPS_FIELDS, f"vps.{name}.")
    for name, host in (data.get("pis") or {}).items():
        check(host, PI_FIELDS, f"pis.{name}.")
        for tunnel_name, tunnel in (host.get("tunnels") or {}).items():
            check(tunnel, TUNNEL_FIELDS, f"pis.{name}.tunnels.{tunnel_name}.")
    return unknown


def test_example_uses_only_known_keys_and_shows_every_key() -> None:
    data = yamlsrc.load(EXAMPLE.read_text()).data
    assert isinstance(data, dict)
    assert walk_schema(data) == []
    shown = {*data, *data["settings"], *data["defaults"]}
    for host in [*data["vps"].values(), *data["pis"].values()]:
        shown |= set(host)
        for tunnel in (host.get("tunnels") or {}).values():
            shown |= set(tunnel)
    every = {*SECTION_FIELDS, *SETTINGS_FIELDS, *DEFAULTS_KEYS, *VPS_FIELDS, *PI_FIELDS, *TUNNEL_FIELDS}
    assert every - shown == set()
    assert set(data["defaults"]) == set(DEFAULTS_KEYS)
    assert set(data["vps"]["main"]) == set(VPS_FIELDS)
    assert set(data["pis"]["pi1"]) == set(PI_FIELDS)


@pytest.fixture
def example(tmp_path: Path, home: Path) -> Path:
    """A copy of the example with every file it names created."""
    folder = tmp_path / "inventory"
    folder.mkdir()
    path = folder / "hosts.yml"
    shutil.copy(EXAMPLE, path)
    doc = yamlsrc.load(path.read_text())
    for key_path in doc.keys:
        value: Any = doc.data
        for part in key_path:
            value = value[part]
        if key_path[-1] in ("key", "password_file", "sudo_password_file", "basic_auth_file", "laptop_key") and value:
            file = Path(value).expanduser()
            file = touch(file if file.is_absolute() else folder / file)
            if key_path[-1] == "laptop_key":
                touch(file.with_name(file.name + ".pub"))
    return path


def test_example_round_trip(example: Path, home: Path) -> None:
    inventory = load_inventory(example)
    secrets = example.parent.resolve() / "secrets"
    assert inventory.path == example
    assert inventory.settings.known_hosts == home / ".ssh" / "known_hosts"
    assert inventory.settings.laptop_key == home / ".ssh" / "id_ed25519"
    [vps] = inventory.vps.values()
    assert (vps.name, vps.address, vps.port, vps.user, vps.tunnel_user) == ("main", "vps.example.com", 12345,
                                                                            "admin", "pitunnel")
    assert (vps.key, vps.password_file, vps.sudo_password_file) == (home / ".ssh" / "vps_ed25519", None,
                                                                   secrets / "vps-sudo-password")
    assert vps.tls_certificate == "/etc/ssl/example/wildcard.example.com.pem"
    assert vps.public_name == "vps.example.com" and vps.acme is not None
    assert (vps.acme.email, vps.acme.directory, vps.acme.ca_bundle) == ("admin@example.com", LETS_ENCRYPT, None)
    assert vps.host_key is None  # no example key: a copy would be refused as CHANGED ("This may be an attack")
    pi1, pi2 = inventory.pis.values()
    assert pi1.host_key is None and pi2.host_key is None
    assert pi1.disable_password_login and pi1.password_file == secrets / "pi-password"
    ssh, web = pi1.tunnels
    assert (ssh.remote_port, ssh.public, ssh.local_port) == (12346, True, 22)
    assert (web.kind, web.path, web.local_port, web.basic_auth_file) == ("http", "/pi1/web/", 8080,
                                                                         secrets / "pi1-web.htpasswd")
    assert pi2.first_vps == "main" and pi2.user == "pi" and pi2.password_file == secrets / "pi-password"
    assert [(t.name, t.kind, t.remote_port, t.public) for t in pi2.tunnels] == [
        ("ssh", "ssh", 20001, False), ("cam", "http", 20002, False)]
    assert pi2.tunnels[1].server_name == "cam.example.com" and web.remote_port == 20000
    # Loading again gives the same inventory and leaves the lock file alone.
    lock = ports_file(example)
    before = lock.read_text()
    assert load_inventory(example) == inventory
    assert lock.read_text() == before


def test_example_copy_with_pi_added_keeps_ports(example: Path) -> None:
    first = ports_of(load_inventory(example))
    text = example.read_text().replace("\npis:\n", "\npis:\n  aaa:\n    address: 10.9.9.9\n"
                                                  "    tunnels: {ssh: {type: ssh}}\n", 1)
    example.write_text(text)
    second = ports_of(load_inventory(example))
    assert {k: v for k, v in second.items() if k in first} == first
    assert second["aaa/ssh"] == 20003


# ---------------------------------------------------------------------------
# yamlsrc


def test_yamlsrc_positions_of_keys_and_values() -> None:
    doc = yamlsrc.load(yml("""
        a: 1
        b:
          c: [x, y]
          d: {e: true}
        22: no
        """))
    assert doc.data == {"a": 1, "b": {"c": ["x", "y"], "d": {"e": True}}, "22": False}
    assert doc.keys[("b", "c")] == (3, 3) and doc.values[("b", "c")] == (3, 6)
    assert doc.values[("b", "c", 1)] == (3, 10)
    assert doc.keys[("b", "d", "e")] == (4, 7)
    assert doc.locate(("a",)) == (1, 4)  # scalar: its value
    assert doc.locate(("b",)) == (2, 1)  # block mapping: its key
    assert doc.locate(("b", "missing", "deeper")) == (2, 1)  # nearest ancestor
    assert doc.locate_key(("a",)) == (1, 1)
    assert doc.issues == []


def test_yamlsrc_duplicates_name_both_lines() -> None:
    doc = yamlsrc.load("a: 1\nb: 2\na: 3\n")
    assert doc.data == {"a": 3, "b": 2}
    [issue] = doc.issues
    assert (issue.path, issue.line, issue.column) == (("a",), 3, 1)
    assert "lines 1 and 3" in issue.message


def test_yamlsrc_merge_keys_are_not_duplicates() -> None:
    doc = yamlsrc.load("base: &b {port: 22, user: pi}\nhost:\n  <<: *b\n  port: 2222\n")
    assert doc.data == {"base": {"port": 22, "user": "pi"}, "host": {"port": 2222, "user": "pi"}}
    assert doc.issues == []
    assert doc.keys[("host", "port")] == (4, 3)


def test_yamlsrc_syntax_error_position() -> None:
    with pytest.raises(yamlsrc.YamlSyntaxError) as caught:
        yamlsrc.load("a: 1\nb: c: d\n")
    assert (caught.value.line, caught.value.column) == (2, 5)
    assert "mapping values are not allowed" in caught.value.message


def test_yamlsrc_refuses_python_tags() -> None:
    with pytest.raises(yamlsrc.YamlSyntaxError):
        yamlsrc.load("a: !!python/object/apply:os.system [echo hi]\n")


def test_yamlsrc_recursive_alias_is_an_issue_not_a_crash() -> None:
    doc = yamlsrc.load("a: &x [1, *x]\n")
    assert doc.data == {"a": [1, None]} and len(doc.issues) == 1


def test_pi_spec_is_frozen(tmp_path: Path) -> None:
    path = write(tmp_path, "vps: {main: {address: vps.example.com}}\npis: {pi1: {address: 10.0.0.1}}\n")
    pi: PiSpec = load_inventory(path).pis["pi1"]
    with pytest.raises(AttributeError):
        pi.port = 2  # type: ignore[misc]


def test_keepalive_presets_set_the_pi_and_its_vps(tmp_path: Path) -> None:
    """`keepalive:` per Pi sets its ServerAlive; the VPS's ClientAlive, unless written, is the slowest its Pis
    ask for (one account serves them all); keys written by hand win."""
    path = write(tmp_path, """
        vps:
          main: {address: 203.0.113.10}
          other: {address: 203.0.113.11, client_alive_interval: 9}
        pis:
          pi1: {address: 10.0.0.1, key: null, vps: main, keepalive: metered}
          pi2: {address: 10.0.0.2, key: null, vps: main, keepalive: fast}
          pi3: {address: 10.0.0.3, key: null, vps: main, keepalive: fast, server_alive_count_max: 8}
          pi4: {address: 10.0.0.4, key: null, vps: other, keepalive: fast}
        """)
    inv = load_inventory(path)
    pis = inv.pis
    assert (pis["pi1"].server_alive_interval, pis["pi1"].server_alive_count_max) == (30, 3)
    assert (pis["pi2"].server_alive_interval, pis["pi2"].server_alive_count_max) == (3, 3)
    assert (pis["pi3"].server_alive_interval, pis["pi3"].server_alive_count_max) == (3, 8)
    assert (inv.vps["main"].client_alive_interval, inv.vps["main"].client_alive_count_max) == (30, 2)
    assert (inv.vps["other"].client_alive_interval, inv.vps["other"].client_alive_count_max) == (9, 2)
