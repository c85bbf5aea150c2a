"""A fleet far away with its VPS down (issue 24): three Pis the laptop reaches only through their tunnels (away
from home) and the VPS's packets dropped. Every task fails fast, each Pi with the VPS's reason; Ctrl-C ends a run
that is only connecting within a second, the recap counts no unreached host as ok, and nothing follows it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pexpect
import pytest
import yaml

import lab
from tests.conftest import ROOT, lab_up

pytestmark = pytest.mark.lab

TIMEOUT = 3  # the inventory's connect_timeout
SLOW = 10  # connect_timeout for the Ctrl-C tests: the default, long enough that waiting for it shows
BUDGET = 1.5 * TIMEOUT + 1
PIS = ("pi1", "pi2", "pi3")
PITUNNEL = str(ROOT / ".venv" / "bin" / "pitunnel")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Path]]:
    """The lab's inventory with connect_timeout 3 (and 10), the laptop away from every Pi's home and the VPS's
    packets dropped."""
    lab_up(len(PIS))
    folder = tmp_path_factory.mktemp("far")
    inventories = {}
    for timeout in (TIMEOUT, SLOW):
        doc = yaml.safe_load(lab.INVENTORY.read_text())
        doc.setdefault("defaults", {})["connect_timeout"] = timeout
        inventories[timeout] = folder / f"hosts{timeout}.yml"
        inventories[timeout].write_text(yaml.safe_dump(doc))
    with ExitStack() as faults:
        for pi in PIS:
            faults.enter_context(lab.away_from_home(pi))
        faults.enter_context(lab.vps_dropped())
        yield inventories


@pytest.fixture
def far(fleet: dict[int, Path]) -> Path:
    return fleet[TIMEOUT]


@pytest.fixture
def slow(fleet: dict[int, Path]) -> Path:
    return fleet[SLOW]


def spawn(task: str, inventory: Path) -> tuple[pexpect.spawn, float]:
    child = pexpect.spawn(PITUNNEL, [task, "-i", str(inventory)], cwd=str(inventory.parent), encoding="utf-8",
                          timeout=60, env={**os.environ, "TERM": "dumb"})
    return child, time.monotonic()


def ended(child: pexpect.spawn) -> tuple[str, int]:
    """What the run printed (colours taken out) and its exit code as a shell shows it (128 + N if signal N
    ended it: a Ctrl-C landing while Python exits, after the recap, ends it by SIGINT, 130 as well)."""
    child.expect(pexpect.EOF)
    child.close()
    code = child.exitstatus if child.signalstatus is None else 128 + child.signalstatus
    return re.sub(r"\x1b\[[0-9;]*m", "", child.before or ""), code


@pytest.mark.parametrize("task", ["status", "provision-pi"])
def test_a_dead_vps_costs_one_connect_timeout_and_every_pi_says_why(far: Path, task: str) -> None:
    child, started = spawn(task, far)
    out, code = ended(child)
    took = time.monotonic() - started
    print(f"{task}: {took:.1f}s")
    assert took <= BUDGET, (took, out)
    assert code == 4, out
    vps = f"{lab.VPS_ADDR}:"
    for pi in PIS:
        line = next(l for l in out.splitlines() if l.startswith("unreachable") and f" {pi} " in l)
        assert "through vps's tunnel" in line and vps in line and f"no answer within {TIMEOUT}s" in line, line
    assert re.search(rf"^vps +: .*unreachable=1", out, re.M), out


def test_status_json_says_unknown_as_null_for_pis_it_could_not_read(far: Path) -> None:
    """Unknown is not zero (issue 24, point 3): a Pi that could not be read has null values, never 0 or "-"."""
    run = subprocess.run([PITUNNEL, "status", "--json", "-i", str(far)], cwd=far.parent, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 4, run.stdout + run.stderr
    rows = json.loads(run.stdout)["tunnels"]
    assert {row["pi"] for row in rows} == set(PIS), rows
    for row in rows:
        assert row["state"] == "unknown", row
        for key in ("since", "reconnects", "unit_restarts"):
            assert row[key] is None, row


def recap_lines(out: str) -> list[str]:
    """The lines from the recap on, but the terminal's own echo of a Ctrl-C pressed once the run had ended."""
    return [line for line in out[out.index("PLAY RECAP"):].splitlines()[1:] if line.strip() != "^C"]


def test_one_ctrl_c_ends_a_run_that_is_only_connecting_within_a_second(slow: Path) -> None:
    child, _ = spawn("provision-pi", slow)
    time.sleep(2)
    child.sendintr()
    sent = time.monotonic()
    out, code = ended(child)
    assert time.monotonic() - sent <= 1, out
    assert code == 130, out
    after = recap_lines(out)
    hosts = [l for l in after if l.strip()]
    assert len(hosts) == 4, out  # the VPS and each Pi, and nothing after them
    for line in hosts:
        assert "interrupted: not reached" in line or "unreachable=1" in line, line


def test_two_ctrl_c_exit_at_once(slow: Path) -> None:
    child, _ = spawn("provision-pi", slow)
    time.sleep(2)
    child.sendintr()
    time.sleep(0.05)
    if child.isalive():
        child.sendintr()
    sent = time.monotonic()
    out, code = ended(child)
    assert time.monotonic() - sent <= 1, out
    assert code == 130, out
    assert all("interrupted: not reached" in line or "unreachable=1" in line
               for line in recap_lines(out) if line.strip()), out  # no host green, and nothing after the recap
