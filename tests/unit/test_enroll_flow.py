"""`pitunnel enroll` across hosts (roles/enroll.py) on scripted VPSes: the bootstrap key authorised on each VPS
of the Pi for its listeners alone until it expires, the first-boot files and the laptop's pin written only when
every VPS took it, check mode, and the refusals when a VPS is not ready. The lab boots a Pi from these files
(tests/lab/test_enroll.py)."""

from __future__ import annotations

import base64
import re
import stat
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from pitunnel.enroll import WiFi
from pitunnel.inventory import Inventory, load_inventory
from pitunnel.roles import enroll
from pitunnel.roles.pi import bootstrap
from pitunnel.roles.pi.role import PI_DEFAULTS
from pitunnel.roles.vps.authorized import BOOTSTRAP_MARKER
from tests.unit.fake_hosts import ACCOUNT, FakeHost, lines, play_on

VPS_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk0cFVnZVtvZKzYZ0x4bE0nZ8d1bW1lUGrVbZ1c9pQr"
WHEN = datetime(2026, 12, 13, 15, 0, tzinfo=timezone.utc)
INVENTORY = """
settings:
  known_hosts: {d}/known_hosts
  laptop_key: null
vps:
  main: {{address: 203.0.113.1}}
  spare: {{address: 203.0.113.2}}
pis:
  pi1:
    vps: [main, spare]
    tunnels:
      ssh: {{type: ssh, remote_port: 20022}}
      web: {{type: http, remote_port: 20080, local_port: 8080}}
  pi2:
    address: 10.0.0.2
    vps: main
    tunnels:
      ssh: {{type: ssh, remote_port: 20023}}
"""
PI2_LINE = "restrict ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEkept pitunnel:pi2"


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    path = tmp_path / "hosts.yml"
    path.write_text(textwrap.dedent(INVENTORY).format(d=tmp_path))
    return load_inventory(path, save_allocations=False)


def vps(name: str, *, account: bool = True, permits: str = "127.0.0.1:20022 127.0.0.1:20080") -> FakeHost:
    """A provisioned VPS (its tunnel account, sshd permitting pi1's listeners, pi2's key authorised)."""
    keys = f"pitunnel:pitunnel:600\n{base64.b64encode((PI2_LINE + chr(10)).encode()).decode()}"
    return FakeHost(name, [("Accepted publickey for ", "NOW 20261206150000 20261206150000\n"),
                           ("getent passwd", ACCOUNT if account else "MISSING"),
                           ("ssh_host_", f"cur {VPS_KEY} root@{name}"),
                           ("sshd -T -C", f"permitlisten {permits}" if permits else ""),
                           ("authorized_keys", keys)])


def hosts_for(**vpses: FakeHost) -> dict[str, FakeHost]:
    pi = FakeHost("pi1")
    pi.target = SimpleNamespace(known_name="[203.0.113.1]:20022")  # type: ignore[attr-defined]
    return {**vpses, "pi1": pi}


def sent_keys(host: FakeHost) -> str:
    blobs = re.findall(r"printf %s (\S+) \| base64 -d > new", "\n".join(b for b in host.ops if "n=authorized_keys\n" in b))
    return "".join(base64.b64decode(b).decode() for b in blobs)


def public_of(private: str, *, blob: bool = True) -> str:
    key = serialization.load_ssh_private_key(private.encode(), None).public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return line.split()[1] if blob else line


def request(inv: Inventory, boot: Path) -> enroll.Request:
    boot.mkdir(exist_ok=True)
    return enroll.Request(inv.pis["pi1"], boot, None, WHEN)


def test_enroll_authorises_the_bootstrap_key_on_every_vps_then_writes_the_files_and_pins_the_pi(
        inv: Inventory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hosts = hosts_for(main=vps("main"), spare=vps("spare"))
    play = play_on(inv, hosts)  # type: ignore[arg-type]
    enroll.enroll(play, request(inv, tmp_path / "boot"))
    assert play.failed == set() and hosts["pi1"].scripts == []  # the Pi has not booted: never contacted
    lines_on = {}
    for name in ("main", "spare"):
        text = sent_keys(hosts[name])
        assert ("AAAAC3NzaC1lZDI1NTE5AAAAIEkept pitunnel:pi2" in text) is (name == "main")  # pi2's key stays
        (line,) = [line for line in text.splitlines() if line.endswith(f"{BOOTSTRAP_MARKER}pi1")]
        assert ('permitlisten="127.0.0.1:20022",permitlisten="127.0.0.1:20080"' in line
                and 'expiry-time="20261213150000Z"' in line and line.startswith("restrict,")), line
        lines_on[name] = line.split()[-2]
    assert lines_on["main"] == lines_on["spare"]  # one bootstrap key for every VPS of the Pi
    boot = tmp_path / "boot"
    assert sorted(p.name for p in boot.iterdir()) == ["meta-data", "user-data"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in boot.iterdir())
    data = yaml.safe_load((boot / "user-data").read_text())
    files = {f["path"]: f["content"] for f in data["write_files"]}
    assert public_of(files["/etc/pitunnel-bootstrap/key"]) == lines_on["main"]  # the key the VPSes accept
    assert files["/etc/pitunnel-bootstrap/spare/known_hosts"] == f"203.0.113.2 {VPS_KEY}\n"  # as each VPS answered
    pinned = (tmp_path / "known_hosts").read_text().split()
    assert pinned[0] == "[203.0.113.1]:20022"  # the Pi's host key, made here, under the name the laptop uses
    assert pinned[1:3] == public_of(data["ssh_keys"]["ed25519_private"], blob=False).split()
    out = lines(capsys)
    assert any(l.startswith(f"changed pi1 enrolment files - {boot}: user-data, meta-data, readable by you alone")
               and "accepted until 2026-12-13 15:00 UTC" in l for l in out), out
    assert any(l.startswith("changed pi1 host key pinned - [203.0.113.1]:20022 SHA256:")
               and "no key is accepted on first use" in l for l in out), out


def test_enroll_in_check_mode_writes_nothing_anywhere_and_says_what_it_would(
        inv: Inventory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hosts = hosts_for(main=vps("main"), spare=vps("spare"))
    enroll.enroll(play_on(inv, hosts, check=True), request(inv, tmp_path / "boot"))  # type: ignore[arg-type]
    assert hosts["main"].ops == [] and hosts["spare"].ops == []
    assert list((tmp_path / "boot").iterdir()) == [] and not (tmp_path / "known_hosts").exists()
    assert any(l.startswith(f"would change pi1 enrolment files - {tmp_path / 'boot'}: user-data, meta-data (mode 600")
               for l in lines(capsys))


@pytest.mark.parametrize(("spare", "why"), [
    (dict(account=False), "pitunnel does not exist"),
    (dict(permits="127.0.0.1:20022"), "sshd does not permit 127.0.0.1:20080 yet"),
    (dict(permits=""), "sshd does not permit 127.0.0.1:20022, 127.0.0.1:20080 yet"),
])
def test_a_vps_not_ready_for_the_pi_writes_no_file_and_no_key_there_and_names_provision_vps(
        inv: Inventory, tmp_path: Path, capsys: pytest.CaptureFixture[str], spare: dict[str, object], why: str) -> None:
    hosts = hosts_for(main=vps("main"), spare=vps("spare", **spare))  # type: ignore[arg-type]
    play = play_on(inv, hosts)  # type: ignore[arg-type]
    enroll.enroll(play, request(inv, tmp_path / "boot"))
    assert play.failed == {"spare", "pi1"}
    assert hosts["spare"].ops == []  # no key where the Pi's listeners are not permitted
    assert list((tmp_path / "boot").iterdir()) == [] and not (tmp_path / "known_hosts").exists()
    out = lines(capsys)
    assert (f"failed spare bootstrap key of pi1 - {why}: run `pitunnel provision-vps` first (nothing was written)"
            in out), out
    assert "failed pi1 enrolment files - not written: spare did not take the bootstrap key (see above)" in out


def enrolled_pi(*, riding: bool) -> FakeHost:
    """pi1 as its first boot left it: a bootstrap instance per VPS running, its unit, key folder and account."""
    pi = FakeHost("pi1", [("systemctl is-enabled pitunnel-bootstrap@", "enabled\nactive"),
                          ("getent passwd pitunnel-boot", "pitunnel-boot:x:998:998::/nonexistent:/usr/sbin/nologin"),
                          ("pitunnel-state/users", "pitunnel-boot"), ("[ -e ", "yes")])
    pi.through_tunnel = riding
    pi.restarts = []  # type: ignore[attr-defined]
    pi.path_restarts = lambda after, within: pi.restarts.append((after, within))  # type: ignore[attr-defined]
    return pi


def test_provision_pi_retires_the_bootstrap_on_the_pi_at_once_when_the_run_reached_it_another_way(
        inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    pi = enrolled_pi(riding=False)
    bootstrap.retire(play_on(inv, {"pi1": pi}), pi)  # type: ignore[arg-type, arg-type]
    for text in ("pitunnel-bootstrap@main.service",
                 "pitunnel-bootstrap@spare.service",
                 "rm -rf /etc/systemd/system/pitunnel-bootstrap@.service", "rm -rf /etc/pitunnel-bootstrap",
                 "userdel --remove pitunnel-boot"):
        assert pi.applied(text), text
    assert not pi.applied("LATER") and not any("systemd-run" in s for s in pi.scripts) and pi.restarts == []  # type: ignore[attr-defined]
    out = lines(capsys)
    assert any(l.startswith("changed pi1 main: bootstrap tunnel retired") for l in out), out


def test_through_the_bootstrap_tunnel_the_pi_retires_it_on_its_own_after_the_run_and_the_run_reconnects(
        inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    pi = enrolled_pi(riding=True)
    bootstrap.retire(play_on(inv, {"pi1": pi}), pi)  # type: ignore[arg-type, arg-type]
    later = [b for b in pi.ops if ">> /run/pitunnel-later.sh" in b]  # each change left for the Pi to make
    assert len(later) == 5 and all(b in later for b in pi.ops if "pitunnel-boot" in b or "bootstrap@" in b)
    assert any("userdel --remove pitunnel-boot" in b for b in later)
    armed = [s for s in pi.scripts if "systemd-run" in s]
    assert len(armed) == 1 and f"--on-active={bootstrap.RETIRE_AFTER}" in armed[0]
    assert pi.scripts[-1] == "true"  # the connection opened again, through the Pi's own tunnel
    assert pi.restarts == [(bootstrap.RETIRE_AFTER + 1, PI_DEFAULTS["listen_wait_seconds"])]  # type: ignore[attr-defined]
    assert any("its bootstrap tunnel stops in 2s, and with it this connection: reconnecting through its own tunnel"
               in l for l in lines(capsys))


def test_a_pi_without_a_bootstrap_or_in_check_mode_is_sent_no_change(inv: Inventory) -> None:
    gone = FakeHost("pi1", [("systemctl is-enabled", "disabled\ninactive"), ("[ -e ", "no")])
    gone.through_tunnel = True
    bootstrap.retire(play_on(inv, {"pi1": gone}), gone)  # type: ignore[arg-type, arg-type]
    assert gone.ops == []
    pi = enrolled_pi(riding=True)
    bootstrap.retire(play_on(inv, {"pi1": pi}, check=True), pi)  # type: ignore[arg-type, arg-type]
    assert pi.ops == [] and pi.restarts == []  # type: ignore[attr-defined]


def test_each_vps_is_read_once_and_written_once_and_the_run_says_what_it_read_there(
        inv: Inventory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hosts = hosts_for(main=vps("main"), spare=vps("spare"))
    enroll.enroll(play_on(inv, hosts), request(inv, tmp_path / "boot"))  # type: ignore[arg-type]
    assert (hosts["main"].round_trips, hosts["spare"].round_trips) == (2, 2)  # one read, one write: no read again
    assert [l for l in lines(capsys) if l.split()[1] == "spare"] == [
        "ok spare tunnel account pitunnel - present",
        "ok spare VPS host keys - 1 host keys read",
        "ok spare listeners sshd permits the tunnel account - read",
        "changed spare authorized keys of the Pis - content",
        "ok spare sessions of retired keys ended - none: every session of pitunnel (0) logged in with a key "
        "authorised now"]


def test_the_bootstrap_key_opens_on_each_vps_the_ports_the_pi_has_there(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Auto ports from each VPS's own range: spare's line permits spare's ports, not main's."""
    text = textwrap.dedent(INVENTORY).format(d=tmp_path)
    text = text.replace("address: 203.0.113.1}", "address: 203.0.113.1, port_range: [20000, 20999]}")
    text = text.replace("address: 203.0.113.2}", "address: 203.0.113.2, port_range: [30000, 30999]}")
    text = text.replace("remote_port: 20022}", "remote_port: auto}").replace("remote_port: 20080,", "remote_port: auto,")
    (tmp_path / "hosts.yml").write_text(text)
    inv = load_inventory(tmp_path / "hosts.yml", save_allocations=False)
    hosts = hosts_for(main=vps("main", permits="127.0.0.1:20000 127.0.0.1:20001"),
                      spare=vps("spare", permits="127.0.0.1:30000 127.0.0.1:30001"))
    play = play_on(inv, hosts)  # type: ignore[arg-type]
    enroll.enroll(play, request(inv, tmp_path / "boot"))
    assert play.failed == set(), lines(capsys)
    for name, ports in (("main", (20000, 20001)), ("spare", (30000, 30001))):
        (line,) = [line for line in sent_keys(hosts[name]).splitlines() if line.endswith(f"{BOOTSTRAP_MARKER}pi1")]
        assert "".join(f'permitlisten="127.0.0.1:{p}",' for p in ports) in line, (name, line)


def test_a_wifi_enrolment_writes_the_network_config_beside_the_rest(inv: Inventory, tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    network = WiFi("home", "GB", "correct horse")
    enroll.enroll(play_on(inv, hosts_for(main=vps("main"), spare=vps("spare"))),  # type: ignore[arg-type]
                  enroll.Request(inv.pis["pi1"], boot, network, WHEN))
    assert sorted(p.name for p in boot.iterdir()) == ["meta-data", "network-config", "user-data"]
    wlan = yaml.safe_load((boot / "network-config").read_text())["network"]["wifis"]["wlan0"]
    assert wlan["access-points"] == {"home": {"password": "correct horse"}} and wlan["regulatory-domain"] == "GB"


def test_when_no_vps_takes_the_bootstrap_key_the_files_line_names_each(
        inv: Inventory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hosts = hosts_for(main=vps("main", account=False), spare=vps("spare", account=False))
    play = play_on(inv, hosts)  # type: ignore[arg-type]
    enroll.enroll(play, request(inv, tmp_path / "boot"))
    assert play.failed == {"main", "spare", "pi1"}
    assert ("failed pi1 enrolment files - not written: main, spare did not take the bootstrap key (see above)"
            in lines(capsys))


def test_enrolling_a_pi_again_replaces_its_pin_and_keeps_every_other_line_of_known_hosts(
        inv: Inventory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = f"203.0.113.1 {VPS_KEY}"
    (tmp_path / "known_hosts").write_text(f"{other}\n[203.0.113.1]:20022 {VPS_KEY}\n")  # the earlier card's key
    play = play_on(inv, hosts_for(main=vps("main"), spare=vps("spare")))  # type: ignore[arg-type]
    enroll.enroll(play, request(inv, tmp_path / "boot"))
    first, pin = (tmp_path / "known_hosts").read_text().splitlines()
    user_data = yaml.safe_load((tmp_path / "boot" / "user-data").read_text())
    assert first == other and pin == f"[203.0.113.1]:20022 {public_of(user_data['ssh_keys']['ed25519_private'], blob=False)}"
    assert (f"changed pi1 enrolment files - {tmp_path / 'boot'}: user-data, meta-data, readable by you alone: they hold "
            "the Pi's host key and its bootstrap key (accepted until 2026-12-13 15:00 UTC); keep the card to yourself "
            "until the Pi has booted") in lines(capsys)
