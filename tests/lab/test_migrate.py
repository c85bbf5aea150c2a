"""`invoke migrate --to vps2` (issue 15, item 3) on real hosts: one lab boot, one Pi on `vps` moved to `vps2`,
killed once halfway (after the inventory is rewritten, both paths up) and rerun. The Pi answers through one VPS
or the other the whole time; at the end it answers through vps2 alone, verify passes, the inventory says vps2,
and vps's /etc is as before it was provisioned. A second rerun changes nothing. Then back to vps with
--keep-old: vps2 keeps its pitunnel side, without pi1's key."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from lab import reachable, target, vps_addresses
from pitunnel.inventory import load_inventory
from pitunnel.reconcile import KILL_AFTER
from pitunnel.roles.migrate import state_file
from pitunnel.roles.probes.report import PathReport
from pitunnel.roles.probes.verify import verify
from pitunnel.roles.site import provision
from tests.conftest import ROOT, lab_up
from tests.lab.runs import etc_diff, etc_state, in_host, play

pytestmark = pytest.mark.lab
KILL_AT = 3  # steps: 1 both paths provisioned, 2 verified through vps2, 3 inventory rewritten, 4 Pi retired old


def migrate(inventory: Path, kill_after: int | None = None, *flags: str,
            to: str = "vps2") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != KILL_AFTER}
    env.update({KILL_AFTER: str(kill_after)} if kill_after else {})
    return subprocess.run([sys.executable, "-m", "invoke", "migrate", "--yes", "-i", str(inventory), "--to", to, *flags],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_migrate_killed_halfway_then_rerun_moves_the_pi_and_leaves_the_old_vps_clean(tmp_path: Path) -> None:
    lab_inventory = Path(str(lab_up(1, vpses=2).inventory))  # type: ignore[attr-defined]
    old_addr, new_addr = vps_addresses()
    etc_before = etc_state("vps")
    doc = yaml.safe_load(lab_inventory.read_text())
    doc["pis"]["pi1"]["vps"] = "vps"
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("# my lab fleet: pi1 lives on vps\n" + yaml.safe_dump(doc, sort_keys=False))
    started = time.monotonic()
    code, _ = play(inventory, provision)
    pi1 = target("pi1")
    assert code == 0 and reachable(pi1, old_addr) and not reachable(pi1, new_addr)
    print(f"provision on vps: {time.monotonic() - started:.0f}s")
    written, ports = inventory.read_text(), inventory.with_name("hosts.ports.yml").read_text()
    checked = migrate(inventory, None, "--check")
    assert checked.returncode == 0 and "then: each Pi verified through vps2" in checked.stdout, checked.stdout[-3000:]
    assert inventory.read_text() == written and inventory.with_name("hosts.ports.yml").read_text() == ports
    assert not state_file(inventory).exists() and not inventory.with_name("hosts.yml.bak").exists()
    assert not reachable(pi1, new_addr)  # --check changed no host

    misses: list[float] = []
    done = threading.Event()

    def watch() -> None:  # through one VPS or the other, throughout
        while not done.is_set():
            if not reachable(pi1):
                misses.append(time.monotonic())
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        killed = migrate(inventory, KILL_AT)
        assert killed.returncode == -9, killed.stdout[-3000:] + killed.stderr[-2000:]
        print(f"migrate killed after step {KILL_AT}: {time.monotonic() - started:.0f}s")
        assert reachable(pi1, old_addr) or reachable(pi1, new_addr)
        assert load_inventory(inventory).pis["pi1"].all_vps == ("vps2",) and state_file(inventory).exists()
        rerun = migrate(inventory)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-2000:]
        print(f"migrate killed + rerun: {time.monotonic() - started:.0f}s")
    finally:
        done.set()
        watcher.join()
    assert misses == [], f"pi1 reachable through neither VPS {len(misses)} time(s)"
    assert reachable(pi1, new_addr) and not reachable(pi1, old_addr)
    reports: list[PathReport] = []
    code, _ = play(inventory, lambda p: reports.extend(verify(p)), quiet=True)
    assert code == 0 and [(r.vps, r.passed) for r in reports] == [("vps2", True)]
    text = inventory.read_text()
    assert text.startswith("# my lab fleet") and load_inventory(inventory).pis["pi1"].all_vps == ("vps2",)
    assert "vps: vps\n" in inventory.with_name("hosts.yml.bak").read_text()
    assert not state_file(inventory).exists()
    assert etc_diff(etc_before, etc_state("vps")) == []  # the old VPS as before pitunnel provisioned it

    again = migrate(inventory)
    assert again.returncode == 0 and "no Pi to move" in again.stdout + again.stderr, again.stdout[-2000:]
    assert inventory.read_text() == text and reachable(pi1, new_addr)

    # and back, keeping vps2's side: its account stays, without pi1's key
    back = migrate(inventory, None, "--keep-old", to="vps")
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-2000:]
    assert reachable(pi1, old_addr) and not reachable(pi1, new_addr)
    assert load_inventory(inventory).pis["pi1"].all_vps == ("vps",)
    keys = in_host("vps2", "cat ~pitunnel/.ssh/authorized_keys 2>&1; id -u pitunnel")
    assert "pi1" not in keys and keys.strip().splitlines()[-1].isdigit(), keys
