"""The code is fully typed: mypy finds nothing in pitunnel, the roles, the lab, tasks.py and the benchmarks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_finds_no_type_errors() -> None:
    run = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, f"mypy (settings in pyproject.toml [tool.mypy]):\n{run.stdout}{run.stderr}"
