"""The engine against real hosts: host keys, sudo, validation and lock-out rollback, isolation of failures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

import lab
from pitunnel.inventory import load_inventory
from pitunnel.ops import File
from pitunnel.remote import Credentials, Remote
from pitunnel.report import Reporter
from pitunnel.runner import Mode, StepFailed, converge
from pitunnel.roles.site import provision_pi as provision_pis
from pitunnel.roles.vps.steps import handlers as vps_handlers
from pitunnel.roles.site import provision_vps
from tests.conftest import lab_up
from tests.lab.runs import RELOAD_SSHD, etc_diff, etc_state, in_host, play

pytestmark = pytest.mark.lab
DROPIN = "/etc/ssh/sshd_config.d/20-test.conf"


@pytest.fixture(scope="module")
def inventory() -> Path:
    return lab_up(1).inventory


@pytest.fixture
def vps(inventory: Path) -> Remote:
    inv = load_inventory(inventory, save_allocations=False)
    remote = Remote(inv.vps["vps"], inv.settings.known_hosts)
    yield remote
    remote.close()


def write_inventory(tmp_path: Path, base: Path, change) -> Path:  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(base.read_text())
    change(doc)
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_sshd_change_that_fails_validation_is_rolled_back(vps: Remote) -> None:
    reporter = Reporter(colour=False)
    bad = File(DROPIN, "ThisIsNotAnOption yes\n", validate="sshd -t", notify=("reload sshd",))
    with pytest.raises(StepFailed, match="validation failed"):
        converge(vps, [bad], reporter, Mode(), vps_handlers(vps))
    assert in_host("vps", f"ls {DROPIN} 2>&1 || true").strip().endswith("No such file or directory")
    assert reporter.recaps["vps"].failed == 1
    assert vps.can_log_in_fresh()


def test_sshd_change_that_would_lock_us_out_is_rolled_back(vps: Remote) -> None:
    """Valid for sshd -t, but root could no longer log in: the fresh-login guard undoes it."""
    reporter = Reporter(colour=False)
    lockout = File(DROPIN, "DenyUsers root\n", validate="sshd -t", notify=("reload sshd",))
    with pytest.raises(StepFailed, match="lock you out.*rolled back"):
        converge(vps, [lockout], reporter, Mode(), vps_handlers(vps))
    assert "No such file" in in_host("vps", f"ls {DROPIN} 2>&1 || true")
    assert vps.can_log_in_fresh(within=5), "the operator must still get in after the rollback"
    assert "denyusers" not in in_host("vps", "sshd -T -C user=root,host=x,addr=192.0.2.9")


def test_changed_host_key_is_refused_before_login(inventory: Path) -> None:
    """The VPS comes back with new host keys (all types, as after a reinstall or under an impostor)."""
    before = in_host("vps", "journalctl -t sshd -t sshd-session --no-pager | grep -c Accepted || true").strip()
    etc_before = etc_state("vps")
    in_host("vps", "mkdir -p /root/keys-saved && cp -a /etc/ssh/ssh_host_* /root/keys-saved/ && "
                   "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A && " + RELOAD_SSHD)
    try:
        code, p = play(inventory, provision_vps)
        assert code == 4  # unreachable (docs/cli.md)
        assert p.reporter.recaps["vps"].unreachable == 1
        assert in_host("vps", "journalctl -t sshd -t sshd-session --no-pager | grep -c Accepted || true").strip() == before
        changed = etc_diff(etc_before, etc_state("vps"))
        assert changed and all("ssh_host_" in line for line in changed), changed  # only the swap itself
    finally:
        in_host("vps", "cp -a /root/keys-saved/ssh_host_* /etc/ssh/ && rm -rf /root/keys-saved && " + RELOAD_SSHD)


def test_unknown_host_key_refused_then_accepted_on_request(inventory: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "known_hosts"
    path = write_inventory(tmp_path, inventory, lambda d: d["settings"].update(known_hosts=str(empty)))
    code, p = play(path, provision_vps, check=True, limit="vps")
    assert code == 4 and p.reporter.recaps["vps"].unreachable == 1
    out = capsys.readouterr().out
    assert "unknown host key for [198.18.0.10]:12345: ssh-ed25519 SHA256:" in out
    assert "--accept-new-host-keys" in out
    assert not empty.exists()
    code, _ = play(path, provision_vps, check=True, limit="vps", accept_new_host_keys=True)
    assert code == 0
    assert empty.read_text().startswith("[198.18.0.10]:12345 ssh-ed25519 ")


def test_wrong_sudo_password_is_a_clear_error(inventory: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    in_host("pi1", "mv /etc/sudoers.d/010_pi-nopasswd /root/010_pi-nopasswd")
    try:
        wrong = tmp_path / "sudo.wrong"
        wrong.write_text("not-the-password\n")
        path = write_inventory(tmp_path, inventory,
                               lambda d: d["pis"]["pi1"].update(sudo_password_file=str(wrong)))
        code, p = play(path, provision_pis, check=True, limit="pi1")
        out = capsys.readouterr().out
        assert code == 2 and p.reporter.recaps["pi1"].failed >= 1
        assert "pi1: the sudo password was not accepted" in out
        assert "not-the-password" not in out
        right = tmp_path / "sudo.right"
        shutil.copy(lab.password_file("pi1"), right)
        path = write_inventory(tmp_path, inventory,
                               lambda d: d["pis"]["pi1"].update(sudo_password_file=str(right)))
        pi = load_inventory(path, save_allocations=False).pis["pi1"]
        remote = Remote(pi, load_inventory(path, save_allocations=False).settings.known_hosts,
                        Credentials(login_password=right.read_text().strip(), sudo_password=right.read_text().strip()))
        assert remote.run("id -un").stdout.strip() == "root"
        remote.close()
    finally:
        in_host("pi1", "mv /root/010_pi-nopasswd /etc/sudoers.d/010_pi-nopasswd")


def test_an_unreachable_host_does_not_stop_the_others(inventory: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    def add_ghost(doc: dict) -> None:
        doc["pis"]["ghost"] = {"address": "198.18.0.99", "user": "pi", "connect_timeout": 2, "tunnels": {
            "ssh": {"type": "ssh", "local_port": 22, "remote_port": 12399}}}

    path = write_inventory(tmp_path, inventory, add_ghost)
    code, p = play(path, provision_pis, check=True)
    assert code == 4  # ghost unreachable, pi1 fine
    assert p.reporter.recaps["ghost"].unreachable == 1
    assert p.reporter.recaps["pi1"].failed == 0 and p.reporter.recaps["pi1"].unreachable == 0
    assert "ghost" in capsys.readouterr().out.split("PLAY RECAP")[1]


def test_bad_inventory_stops_before_any_host_is_touched(inventory: Path, tmp_path: Path) -> None:
    before = in_host("vps", "journalctl -t sshd -t sshd-session --no-pager | grep -c Accepted || true").strip()
    path = write_inventory(tmp_path, inventory, lambda d: d["pis"]["pi1"].update(prot=22))
    code, p = play(path, provision_vps)
    assert code == 3 and p is None
    assert in_host("vps", "journalctl -t sshd -t sshd-session --no-pager | grep -c Accepted || true").strip() == before
