"""The lab itself: real hosts booted with systemd, SSH as a fresh VPS and a fresh Pi offer it, the NAT."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import paramiko
import pytest
import yaml

import lab
from tests.conftest import lab_up, require_lab
from tests.lab.probe import ssh_cli, tcp_from, tcp_from_laptop

pytestmark = pytest.mark.lab
KEY = str(lab.LAPTOP_KEY)
KNOWN = str(lab.KNOWN_HOSTS)


def machine_snapshot() -> dict[str, object]:
    """What the lab may add to this machine: links, addresses, routes, firewall, mounts, processes."""
    def out(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True).stdout

    procs = sorted(line.split(None, 1)[1] for line in out("ps", "-eo", "pid=,args=").splitlines()
                   if "nspawn" in line or "apt-cacher" in line)
    return {
        "links": sorted(l["ifname"] for l in json.loads(out("ip", "-j", "link"))),
        "addrs": out("ip", "-br", "addr"),
        "routes": out("ip", "route"),
        "filter": out("iptables-save", "-t", "filter").splitlines()[1:-1],
        "nat": out("iptables-save", "-t", "nat").splitlines()[1:-1],
        "mounts": sorted(l for l in Path("/proc/mounts").read_text().splitlines() if "pitunnel" in l),
        "procs": procs,
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
        "inotify_limit": Path("/proc/sys/fs/inotify/max_user_instances").read_text(),
    }


def _strip_counters(snapshot: dict[str, object]) -> dict[str, object]:
    for table in ("filter", "nat"):
        snapshot[table] = [l for l in snapshot[table] if not l.startswith("#")]  # type: ignore[union-attr]
    return snapshot


def password_login(address: str, user: str, password: str) -> str:
    client = paramiko.SSHClient()
    client.load_host_keys(KNOWN)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(address, username=user, password=password, look_for_keys=False, allow_agent=False,
                       timeout=10)
        _, stdout, _ = client.exec_command("id -un; sudo -n true && echo sudo-ok")
        return stdout.read().decode()
    finally:
        client.close()


@pytest.fixture(scope="module")
def two_pis() -> lab.UpReport:
    require_lab()
    lab.down()
    before = _strip_counters(machine_snapshot())
    report = lab_up(2)
    report.before = before  # type: ignore[attr-defined]
    return report  # type: ignore[return-value]


def test_every_host_is_running_systemd(two_pis: lab.UpReport) -> None:
    rows = lab.status()
    assert [r.name for r in rows] == ["vps", "pi1", "pi2"]
    for row in rows:
        assert row.running and row.systemd == "running", row
        pid1 = lab.exec_in(row.name, "cat /proc/1/comm").stdout.strip()
        assert pid1 == "systemd"


def test_vps_is_a_fresh_cloud_server(two_pis: lab.UpReport) -> None:
    done = ssh_cli("-i", KEY, "-o", f"UserKnownHostsFile={KNOWN}", "-o", "StrictHostKeyChecking=yes",
                   "-p", "12345", "root@198.18.0.10", "hostname; command -v nginx || echo no-nginx")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["vps", "no-nginx"]
    assert not tcp_from_laptop("198.18.0.10", 22), "the lab's VPS runs sshd on 12345, not 22"


def test_pi_is_a_fresh_raspberry_pi(two_pis: lab.UpReport) -> None:
    password = lab.password_file("pi1").read_text().strip()
    assert password_login("198.19.1.2", "pi", password).split() == ["pi", "sudo-ok"]
    # the laptop's key is not there yet, and autossh is absent
    done = ssh_cli("-i", KEY, "-o", f"UserKnownHostsFile={KNOWN}", "pi@198.19.1.2", "true")
    assert done.returncode == 255 and "Permission denied" in done.stderr
    assert lab.exec_in("pi1", "command -v autossh || echo none").stdout.strip() == "none"
    with pytest.raises(paramiko.AuthenticationException):
        password_login("198.19.1.2", "pi", "wrong-" + password)


def test_pi_api_names_its_pi(two_pis: lab.UpReport) -> None:
    import urllib.request

    for name, address in (("pi1", "198.19.1.2"), ("pi2", "198.19.2.2")):
        with urllib.request.urlopen(f"http://{address}/", timeout=5) as resp:
            assert json.load(resp)["pi"] == name


def test_nat_holds_both_ways(two_pis: lab.UpReport) -> None:
    assert tcp_from("pi1", "198.18.0.10", 12345), "a Pi must reach the VPS"
    assert not tcp_from("vps", "198.19.1.2", 22), "the VPS must not reach a Pi behind its NAT"
    assert not tcp_from("pi1", "198.19.2.2", 22), "one home must not reach another"
    assert tcp_from_laptop("198.19.1.2", 22), "the laptop reaches a Pi directly on first setup"
    # the VPS sees the home router's public address, not the Pi's
    seen = lab.exec_in("pi1", "timeout 5 ssh -o BatchMode=yes -o StrictHostKeyChecking=no "
                   "-p 12345 nobody@198.18.0.10 true 2>&1; true").stdout
    assert "Permission denied" in seen
    log = lab.exec_in("vps", "journalctl -t sshd -t sshd-session --no-pager | grep -c 198.18.0.101 || true").stdout
    assert int(log.strip() or 0) >= 1


def test_lab_inventory_lists_hosts(two_pis: lab.UpReport) -> None:
    doc = yaml.safe_load(two_pis.inventory.read_text())
    assert list(doc["pis"]) == ["pi1", "pi2"]
    assert doc["vps"]["vps"]["port"] == 12345
    text = two_pis.inventory.read_text()
    for name in ("pi1", "pi2"):
        assert lab.password_file(name).read_text().strip() not in text


def test_up_again_is_a_no_op(two_pis: lab.UpReport) -> None:
    pids = {r.name: lab.record(r.name).nspawn_pid for r in lab.status()}
    again = lab.up(pis=2, release=two_pis_release(), inventory=two_pis.inventory)
    assert again.already_up
    assert {r.name: lab.record(r.name).nspawn_pid for r in lab.status()} == pids


def two_pis_release() -> str:
    from tests.conftest import RELEASE

    return RELEASE


def test_down_leaves_nothing_behind(two_pis: lab.UpReport) -> None:
    before = two_pis.before  # type: ignore[attr-defined]
    assert _strip_counters(machine_snapshot()) != before  # the lab did add things
    removed = lab.down(inventory=two_pis.inventory)
    assert "host pi2" in removed
    assert _strip_counters(machine_snapshot()) == before
    assert not lab.STATE_DIR.exists() and not two_pis.inventory.exists()
    assert lab.down(inventory=two_pis.inventory) == []  # idempotent


def test_one_pi_lab_then_down(lab_inventory: Path) -> None:
    report = lab_up(1)
    assert [r.name for r in lab.status()] == ["vps", "pi1"]
    assert all(r.systemd == "running" for r in lab.status())
    assert tcp_from("pi1", "198.18.0.10", 12345)
    lab.down(inventory=lab_inventory)
    assert lab.status() == []
    assert report.plan.pis[0].name == "pi1"


def test_range_clash_is_refused_and_leaves_nothing(lab_inventory: Path) -> None:
    require_lab()
    lab.down(inventory=lab_inventory)
    before = _strip_counters(machine_snapshot())
    subprocess.run(["ip", "link", "add", "clash0", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "198.18.200.1/24", "dev", "clash0"], check=True)
        subprocess.run(["ip", "link", "set", "clash0", "up"], check=True)
        with pytest.raises(lab.LabError, match=r"clashes with existing routes \(198\.18\.200\.0/24 dev clash0"):
            lab.up(pis=1, release="bookworm", inventory=lab_inventory)
    finally:
        subprocess.run(["ip", "link", "del", "clash0"], check=False)
    assert _strip_counters(machine_snapshot()) == before


def test_not_root_gets_one_clear_line(lab_inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_lab()
    before = _strip_counters(machine_snapshot())
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(lab.LabError) as caught:
        lab.up(pis=1, release="bookworm", inventory=lab_inventory)
    assert str(caught.value) == "the lab needs root (it makes bridges, firewall rules and containers): run it as root"
    monkeypatch.undo()
    assert _strip_counters(machine_snapshot()) == before
