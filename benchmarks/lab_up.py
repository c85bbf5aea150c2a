"""Benchmark: how long `lab.up` takes cold (no cached root filesystem) and warm (cached).

Prints a table and writes benchmarks/results/lab_up.json. Not a test: it asserts nothing.
The cold run uses a throw-away cache directory, so the user's cache is never removed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def timed_up(pis: int, release: str, cache: str | None) -> float:
    env = dict(os.environ)
    if cache:
        env["PITUNNEL_LAB_CACHE"] = cache
    code = ("import time; import lab; lab.down(); t=time.monotonic();"
            f"lab.up(pis={pis}, release={release!r}, fresh=True);"
            "print(time.monotonic()-t)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"lab.up failed: {done.stderr.strip()[-500:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main(pis: int = 2, release: str = "bookworm", warm_runs: int = 3, cold: bool = True) -> dict[str, object]:
    rows: dict[str, object] = {}
    if cold:
        with tempfile.TemporaryDirectory(prefix="pitunnel-cold-cache-", dir="/var/tmp") as cache:
            rows["cold"] = timed_up(pis, release, cache)
    warm = [timed_up(pis, release, None) for _ in range(warm_runs)]
    rows["warm_median"] = sorted(warm)[len(warm) // 2]
    rows["warm_max"] = max(warm)
    result = {"benchmark": "lab.up", "pis": pis, "release": release, "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores", **rows,
              "warm_runs": warm, "target_warm_2_pis_s": 15}
    subprocess.run([sys.executable, "-c", "import lab; lab.down()"], cwd=ROOT, check=False)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lab_up.json").write_text(json.dumps(result, indent=2))
    print(f"\nlab.up with {pis} Pis ({release})")
    print(f"{'run':<14} {'seconds':>8}")
    if "cold" in rows:
        print(f"{'cold':<14} {rows['cold']:>8.1f}")
    print(f"{'warm median':<14} {rows['warm_median']:>8.1f}")
    print(f"{'warm max':<14} {rows['warm_max']:>8.1f}   (target: warm with 2 Pis under 15 s)")
    return result
