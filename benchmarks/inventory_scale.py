"""Benchmark: the inventory of a large fleet on the laptop. An inventory of N Pis (each with an ssh tunnel on a
fixed remote_port and an http tunnel on `remote_port: auto`) is written to a temp folder, then timed:
loading and checking it with no port lock file yet (every auto port allocated, the lock file written), loading it
again with the lock file (what every later run does), and rendering what provision-vps sends the VPS (the Nginx
config of every route, the sshd Match block, authorized_keys and the rest: `converge_ops`).

No host is needed. Prints a table and writes benchmarks/results/inventory.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import cProfile
import json
import os
import platform
import pstats
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pitunnel.inventory import Inventory, load_inventory, ports_file
from pitunnel.roles.vps.steps import converge_ops

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FIXED_BASE = 30000  # the ssh tunnels' fixed ports: above the default port_range (20000-29999) the auto ports use


def inventory_doc(pis: int) -> dict[str, Any]:
    """One VPS and `pis` Pis, each with an ssh tunnel on a fixed port and an http tunnel on an auto port."""
    return {
        "settings": {"laptop_key": None, "known_hosts": "known_hosts"},
        "vps": {"main": {"address": "vps.example.com", "port": 12345, "public_name": "vps.example.com"}},
        "pis": {f"pi{i}": {"address": f"10.{i // 250}.{i % 250}.2",
                           "tunnels": {"ssh": {"type": "ssh", "remote_port": FIXED_BASE + i},
                                       "web": {"type": "http", "local_port": 8080, "remote_port": "auto"}}}
                for i in range(1, pis + 1)},
    }


def timed(work: Callable[[], object], runs: int) -> tuple[float, object]:
    """The median wall time of `runs` calls of `work`, and what the last returned."""
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def measure(pis: int, runs: int, profile: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pitunnel-inv-") as tmp:
        path = Path(tmp) / "hosts.yml"
        path.write_text(yaml.safe_dump(inventory_doc(pis), sort_keys=False))
        (Path(tmp) / "known_hosts").write_text("")
        lock = ports_file(path)

        def cold() -> Inventory:
            lock.unlink(missing_ok=True)
            return load_inventory(path)

        cold_s, _ = timed(cold, runs)
        warm_s, inv = timed(lambda: load_inventory(path), runs)
        assert isinstance(inv, Inventory)
        vps = inv.vps["main"]
        render_s, ops = timed(lambda: converge_ops(inv, vps), runs)
        if profile:
            profiler = cProfile.Profile()
            profiler.runcall(lambda: (cold(), converge_ops(load_inventory(path), vps)))
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        return dict(pis=pis, tunnels=2 * pis, inventory_bytes=path.stat().st_size, ports_file_bytes=lock.stat().st_size,
                    ops=len(ops) if isinstance(ops, list) else None, load_cold_s=round(cold_s, 3),
                    load_s=round(warm_s, 3), render_s=round(render_s, 3), total_s=round(warm_s + render_s, 3),
                    total_cold_s=round(cold_s + render_s, 3))


def revision() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main(sizes: list[int], runs: int = 3, profile: bool = False) -> None:
    rows = [measure(n, runs, profile) for n in sizes]
    print(f"{'pis':>6} {'load cold s':>12} {'load s':>8} {'render s':>9} {'total s':>8}  (median of {runs})")
    for r in rows:
        print(f"{r['pis']:>6} {r['load_cold_s']:>12.3f} {r['load_s']:>8.3f} {r['render_s']:>9.3f} {r['total_s']:>8.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = dict(date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), machine=platform.node(),
               cpus=len(os.sched_getaffinity(0)), revision=revision(), runs=runs, rows=rows)
    (RESULTS / "inventory.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"written: {RESULTS / 'inventory.json'}")
