"""The README's first command, exactly as written, on a lab brought up from nothing: it must end with
every Pi verified, and the ssh and curl lines it prints must reach the Pi."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import lab
from tests.conftest import RELEASE, ROOT, require_lab

pytestmark = pytest.mark.lab


def readme_commands() -> list[str]:
    """The commands of the README's first code block (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "README.md has no ```sh block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_opens_with_the_demo_and_the_tests() -> None:
    commands = readme_commands()
    assert commands[:2] == ["bash scripts/setup.sh && .venv/bin/invoke demo",
                            "bash scripts/setup.sh && .venv/bin/python -m pytest"]


@pytest.mark.skipif(RELEASE != "bookworm", reason="the README's demo runs on the default release")
def test_the_readmes_demo_works_from_nothing_and_its_hints_reach_the_pi() -> None:
    require_lab()
    lab.down()
    demo = readme_commands()[0]
    run = subprocess.run(["bash", "-c", demo], cwd=ROOT, capture_output=True, text=True, timeout=900,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 0, f"{demo} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert "pi1 via vps: PASS" in run.stdout
    assert "Every Pi answers through the VPS" in run.stdout
    hints = run.stdout[run.stdout.index("Every Pi answers through the VPS"):].splitlines()
    ssh = next(line.strip() for line in hints if line.strip().startswith("ssh "))
    curl = next(line.strip() for line in hints if line.strip().startswith("curl "))
    landed = subprocess.run(shlex.split(ssh) + ["-o", "BatchMode=yes", "hostname"], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert landed.returncode == 0, landed.stderr
    assert landed.stdout.strip() == "pi1"
    hint = next(line.strip() for line in hints if line.strip().startswith("pitunnel "))
    command = hint.split("(")[0].split()  # pitunnel -i INVENTORY ssh pi1
    by_name = subprocess.run([str(Path(sys.executable).with_name("pitunnel")), *command[1:], "--", "hostname"],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (by_name.returncode, by_name.stdout.strip()) == (0, "pi1"), by_name.stderr
    with urllib.request.urlopen(curl.split()[1], timeout=10) as response:
        assert response.status == 200
        assert "pi1" in response.read().decode()
