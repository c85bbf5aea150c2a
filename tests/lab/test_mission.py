"""The mission on real hosts: the seed's scenario with two Pis on one VPS, provisioned, proven, undone."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from lab import KNOWN_HOSTS, LAPTOP_KEY
from pitunnel.roles.probes.status import status
from pitunnel.roles.probes.verify import verify
from pitunnel.roles.site import provision as provision_site
from pitunnel.roles.site import teardown as teardown_site
from tests.conftest import lab_up
from tests.lab.runs import etc_diff, etc_state, in_host, play

pytestmark = pytest.mark.lab
HOSTS = ("vps", "pi1", "pi2")


def provision_all(p):  # type: ignore[no-untyped-def]
    provision_site(p)  # what `invoke provision` runs


def teardown_all(p, purge: bool = True):  # type: ignore[no-untyped-def]
    teardown_site(p, purge=purge)  # what `invoke teardown --purge` runs


@pytest.fixture(scope="module")
def fresh() -> dict[str, object]:
    report = lab_up(2)
    return {
        "inventory": report.inventory,
        "etc": {h: etc_state(h) for h in HOSTS},
        "sshd_root": in_host("vps", "sshd -T -C user=root,host=x,addr=192.0.2.9"),
    }


def recap(p) -> dict[str, tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    return {h: (r.changed, r.failed + r.unreachable, r.round_trips) for h, r in p.reporter.recaps.items()}


def test_check_mode_on_fresh_hosts_changes_nothing(fresh: dict) -> None:
    code, p = play(fresh["inventory"], provision_all, check=True)
    assert code == 0
    changes = recap(p)
    assert changes["vps"][0] > 0 and changes["pi1"][0] > 0, changes  # it reports what would change
    for host in HOSTS:
        assert etc_diff(fresh["etc"][host], etc_state(host)) == [], host
    assert in_host("vps", "command -v nginx || echo none").strip() == "none"


def test_provision_converges(fresh: dict) -> None:
    code, p = play(fresh["inventory"], provision_all)
    assert code == 0, recap(p)
    assert all(changed > 0 and bad == 0 for changed, bad, _ in recap(p).values())


def test_rerun_changes_nothing_in_few_round_trips(fresh: dict) -> None:
    code, p = play(fresh["inventory"], provision_all)
    assert code == 0
    for host, (changed, bad, trips) in recap(p).items():
        print(f"no-change rerun: {host} round trips = {trips}")
        assert (changed, bad) == (0, 0), host
        assert trips <= 2, (host, trips)  # the target: at most 2 round trips per host for a no-change rerun


def test_check_after_converge_reports_nothing(fresh: dict) -> None:
    before = {h: etc_state(h) for h in HOSTS}
    code, p = play(fresh["inventory"], provision_all, check=True)
    assert code == 0
    assert all(changed == 0 for changed, _, _ in recap(p).values()), recap(p)
    assert all(etc_diff(before[h], etc_state(h)) == [] for h in HOSTS)


def test_verify_proves_every_pi(fresh: dict) -> None:
    reports: list = []
    code, _ = play(fresh["inventory"], lambda p: reports.extend(verify(p)), quiet=True)
    assert code == 0
    assert [r.pi for r in reports] == ["pi1", "pi2"]
    for r in reports:
        failed = [(c.name, c.detail) for c in r.checks if not c.passed]
        assert failed == [], (r.pi, failed)
        names = {c.name for c in r.checks}
        # one Pi's key cannot touch the other's ports: both of the other Pi's listeners were probed
        assert sum(1 for n in names if n.startswith("refused: other-pi")) == 2
        assert {"refused: command", "refused: pty", "refused: forward-to-vps", "refused: other-port"} <= names


def ssh_to_pi1_through_vps(command: str) -> subprocess.CompletedProcess[str]:
    """The seed's `ssh -p 12346 pi_user@vps_host`, with plain OpenSSH, checked by pi1's own host key."""
    key = LAPTOP_KEY
    return subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-i", str(key), "-o", f"UserKnownHostsFile={KNOWN_HOSTS}",
         "-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=198.19.1.2", "-o", "ConnectTimeout=10",
         "-p", "12346", "pi@198.18.0.10", command], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_seed_scenario_ssh_through_vps_port(fresh: dict) -> None:
    """The seed's `ssh -p 12346 pi_user@vps_host` lands on pi1 (by its host key)."""
    done = ssh_to_pi1_through_vps("hostname")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pi1"
    # and the API through Nginx on port 80 answers as pi2 for pi2's path
    import json
    import urllib.request

    with urllib.request.urlopen("http://198.18.0.10/pi2/x", timeout=10) as resp:
        body = json.load(resp)
    assert body["pi"] == "pi2" and body["path"] == "/x" and body["x_forwarded_for"] == "198.18.0.1"


def test_scanners_on_the_public_port_do_not_lock_the_owner_out(fresh: dict) -> None:
    """Everything through the tunnel reaches the Pi's sshd from 127.0.0.1. Connections that never
    authenticate (what scanners send to any public port) must not get that one address penalised
    (OpenSSH 9.8+), or sshd refuses the owner too."""
    import socket

    for _ in range(150):
        try:
            socket.create_connection(("198.18.0.10", 12346), timeout=2).close()
        except OSError:
            pass
        time.sleep(0.02)
    time.sleep(1)
    done = ssh_to_pi1_through_vps("hostname")
    assert done.returncode == 0 and done.stdout.strip() == "pi1", done.stderr
    # the exemption is written exactly where sshd has per-source penalties
    penalties = "persourcepenalties " in in_host("pi1", "sshd -T 2>/dev/null").lower()
    dropin = in_host("pi1", "cat /etc/ssh/sshd_config.d/10-pitunnel-loopback.conf 2>/dev/null")
    assert ("PerSourcePenaltyExemptList 127.0.0.1" in dropin) == penalties, (penalties, dropin)


def test_tunnel_key_never_left_the_pi(fresh: dict) -> None:
    private = in_host("pi1", "cat /var/lib/pitunnel/.ssh/pitunnel_ed25519")
    assert "PRIVATE KEY" in private
    blob = "".join(private.strip().splitlines()[1:-1])
    repo = Path(__file__).resolve().parents[2]
    for path in repo.rglob("*"):
        if path.is_file() and not {".git", ".venv"} & set(path.parts) and path.stat().st_size < 1_000_000:
            assert blob[:40] not in path.read_text(errors="ignore"), path
    assert blob[:40] not in KNOWN_HOSTS.read_text()
    assert "PRIVATE KEY" not in in_host("vps", "cat /var/lib/pitunnel/.ssh/authorized_keys")


def test_sshd_unchanged_for_other_users(fresh: dict) -> None:
    assert in_host("vps", "sshd -T -C user=root,host=x,addr=192.0.2.9") == fresh["sshd_root"]
    tunnel = in_host("vps", "sshd -T -C user=pitunnel,host=x,addr=192.0.2.9")
    for line in ("allowtcpforwarding remote", "permitopen none", "gatewayports clientspecified", "permittty no",
                 "forcecommand /bin/false", "passwordauthentication no"):
        assert line in tunnel.splitlines(), line


def test_status_shows_each_tunnel_up(fresh: dict) -> None:
    rows: list = []
    code, _ = play(fresh["inventory"], lambda p: rows.extend(status(p)), quiet=True)
    assert code == 0
    assert {(r.pi, r.tunnel) for r in rows} == {("pi1", "ssh"), ("pi1", "api"), ("pi2", "ssh"), ("pi2", "api")}
    assert all(r.up and r.ssh_starts >= 1 for r in rows), rows


def test_tunnel_comes_back_after_its_ssh_is_killed(fresh: dict) -> None:
    in_host("pi1", "pkill -KILL -u pitunnel -x ssh")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "0.0.0.0:12346" in in_host("vps", "ss -Htln") and \
                subprocess.run(["curl", "-sf", "http://198.18.0.10/pi1/"], capture_output=True).returncode == 0:
            break
        time.sleep(0.5)
    else:
        pytest.fail("tunnel did not come back within 60s after its ssh was killed")


def test_key_only_teardown_keeps_the_laptops_key_and_finishes(fresh: dict, tmp_path: Path) -> None:
    """A Pi reached with the laptop's key alone (no login password): teardown removes everything else,
    keeps that key (else nobody could log in again) and says so, and exits 0; with the password it goes."""
    import yaml

    from pitunnel.roles.pi.steps import teardown as teardown_pis

    doc = yaml.safe_load(Path(str(fresh["inventory"])).read_text())
    del doc["pis"]["pi2"]["password_file"]
    key_only = tmp_path / "hosts.yml"
    key_only.write_text(yaml.safe_dump(doc))
    code, p = play(key_only, lambda p: teardown_pis(p, purge=False), limit="pi2")
    assert code == 0, recap(p)
    assert p is not None and [h for h, text in p.reporter.warnings if "kept the laptop's key" in text] == ["pi2"]
    assert "pitunnel-laptop" in in_host("pi2", "cat ~pi/.ssh/authorized_keys")
    left = in_host("pi2", "systemctl is-enabled --quiet pitunnel@vps.service && echo unit; test -e /etc/pitunnel && echo etc")
    assert left.split() == [], f"teardown stopped at the laptop's key instead of finishing: {left}"
    code, p = play(key_only, lambda p: teardown_pis(p, purge=False), limit="pi2")
    assert code == 0 and recap(p)["pi2"][0] == 0, recap(p)  # the rerun: nothing left to do, same warning


def test_teardown_leaves_etc_as_before(fresh: dict) -> None:
    code, p = play(fresh["inventory"], teardown_all)
    assert code == 0, recap(p)
    for host in HOSTS:
        assert etc_diff(fresh["etc"][host], etc_state(host)) == [], host
    code, p = play(fresh["inventory"], teardown_all)
    assert code == 0 and all(changed == 0 for changed, _, _ in recap(p).values()), recap(p)
