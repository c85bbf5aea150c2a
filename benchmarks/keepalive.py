"""Benchmark: what fast detection of a silent drop costs in keepalive traffic (issue 17, part 3).

For each keepalive profile (the Pi's ServerAliveInterval x CountMax, the VPS's ClientAliveInterval x
CountMax), on fresh lab hosts provisioned by pitunnel with that profile written on both sides:

- the idle tunnel's traffic, both directions, IP and TCP headers included, counted on the lab's
  forwarding path (iptables counters) for --idle seconds and extrapolated to bytes per hour and MB
  per month (30 days);
- `nat-forgets`: the tunnel's flow dropped both ways while both links stay up and nothing is killed
  (a carrier-grade NAT forgetting the mapping), recovery timed from the drop, --runs times.

Prints a table and writes benchmarks/results/keepalive.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lab
from lab import INVENTORY, inject, target, tunnel_bytes, wait_recovered

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TARGET_RECOVERY_S = 35.0  # nat-forgets median, default profile
TARGET_MB_MONTH = 100.0  # keepalive traffic per Pi, default profile
MONTH_HOURS = 24 * 30


@dataclass(frozen=True)
class Profile:
    name: str
    server_alive_interval: int
    server_alive_count_max: int
    client_alive_interval: int
    client_alive_count_max: int

    def label(self) -> str:
        return (f"Pi {self.server_alive_interval} s x {self.server_alive_count_max}, "
                f"VPS {self.client_alive_interval} s x {self.client_alive_count_max}")


def profiles_from(names: list[str]) -> list[Profile]:
    from pitunnel.inventory.model import KEEPALIVE

    out = []
    for name in names:
        if name in KEEPALIVE:
            k = KEEPALIVE[name]
            out.append(Profile(name, k.server_alive_interval, k.server_alive_count_max, k.client_alive_interval,
                               k.client_alive_count_max))
        else:  # "SAIxSCM/CAIxCCM", e.g. 10x3/5x2 (pitunnel before issue 17)
            pi, vps = name.split("/")
            sai, scm = (int(n) for n in pi.split("x"))
            cai, ccm = (int(n) for n in vps.split("x"))
            out.append(Profile(name, sai, scm, cai, ccm))
    return out


def provision(profile: Profile, release: str) -> None:
    """Fresh lab hosts, provisioned with the profile written in the inventory (the Pi's keys) and on the VPS."""
    import yaml

    from pitunnel.taskkit import Flags, run_play
    from pitunnel.roles.site import provision_pi as provision_pis
    from pitunnel.roles.site import provision_vps

    lab.up(pis=1, release=release, fresh=True)
    inv = yaml.safe_load(INVENTORY.read_text())
    for pi in inv["pis"].values():
        pi["server_alive_interval"] = profile.server_alive_interval
        pi["server_alive_count_max"] = profile.server_alive_count_max
    for vps in inv["vps"].values():
        vps["client_alive_interval"] = profile.client_alive_interval
        vps["client_alive_count_max"] = profile.client_alive_count_max
    INVENTORY.write_text(yaml.safe_dump(inv, sort_keys=False))

    def both(p):  # type: ignore[no-untyped-def]
        provision_vps(p)
        provision_pis(p)

    run_play(both, Flags(inventory=str(INVENTORY)), quiet=True)
    if wait_recovered(target("pi1"), time.monotonic(), 90) is None:
        raise RuntimeError(f"{profile.name}: the tunnel never came up")


def measure(profile: Profile, runs: int, idle: float, timeout: float, release: str) -> dict[str, object]:
    provision(profile, release)
    time.sleep(3)  # the probes' first exchanges after the reachability check
    size, packets = tunnel_bytes("pi1", idle)
    per_hour = size * 3600 / idle
    print(f"  {profile.name:<10} idle {idle:.0f} s: {size} bytes in {packets} packets -> {per_hour / 1e3:.1f} kB/h, "
          f"{per_hour * MONTH_HOURS / 1e6:.1f} MB/month", flush=True)
    times: list[float | None] = []
    for _ in range(runs):
        seconds = inject("nat-forgets", "pi1", timeout=timeout)
        times.append(seconds)
        print(f"  {profile.name:<10} nat-forgets {'NOT recovered' if seconds is None else f'{seconds:.1f} s'}",
              flush=True)
    return {**asdict(profile), "idle_s": idle, "idle_bytes": size, "idle_packets": packets,
            "bytes_per_hour": per_hour, "mb_per_month": per_hour * MONTH_HOURS / 1e6, "nat_forgets_s": times}


def main(profiles: list[str], runs: int = 3, idle: float = 120, timeout: float = 150,
         release: str = "bookworm") -> dict[str, object]:
    rows = []
    try:
        for profile in profiles_from(profiles):
            rows.append(measure(profile, runs, idle, timeout, release))
    finally:
        lab.down()
    doc = {"benchmark": "keepalive", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "release": release,
           "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores", "runs": runs,
           "timeout_s": timeout, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "keepalive.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(table(doc))
    return doc


def table(doc: dict[str, object]) -> str:
    rows: list[dict[str, object]] = doc["rows"]  # type: ignore[assignment]
    lines = [f"\nKeepalive: nat-forgets recovery and idle traffic ({doc['date']}, {doc['machine']}, lab hosts "
             f"{doc['release']}, {doc['runs']} runs each)", "",
             "| profile | Pi ServerAlive | VPS ClientAlive | nat-forgets median s (each run) | bytes per hour "
             "| MB per month |", "|---|---|---|---|---|---|"]
    for r in rows:
        times: list[float | None] = r["nat_forgets_s"]  # type: ignore[assignment]
        ok = [t for t in times if t is not None]
        median = f"{statistics.median(ok):.1f}" if ok and len(ok) == len(times) else f"> {doc['timeout_s']}"
        each = ", ".join("-" if t is None else f"{t:.1f}" for t in times)
        lines.append(f"| {r['name']} | {r['server_alive_interval']} s x {r['server_alive_count_max']} | "
                     f"{r['client_alive_interval']} s x {r['client_alive_count_max']} | {median} ({each}) | "
                     f"{float(r['bytes_per_hour']):.0f} | {float(r['mb_per_month']):.1f} |")  # type: ignore[arg-type]
    default = next((r for r in rows if r["name"] == "default"), None)
    if default is not None:
        runs: list[float | None] = default["nat_forgets_s"]  # type: ignore[assignment]
        ok = [t for t in runs if t is not None]
        mid = statistics.median(ok) if ok and len(ok) == len(runs) else None
        month = float(default["mb_per_month"])  # type: ignore[arg-type]
        ok_time = mid is not None and mid <= TARGET_RECOVERY_S
        shown = "-" if mid is None else f"{mid:.1f}"
        lines += ["", f"Default: nat-forgets median {shown} s (<= {TARGET_RECOVERY_S:g} s): "
                      f"{'met' if ok_time else 'NOT met'}; keepalive traffic {month:.1f} MB per month "
                      f"(<= {TARGET_MB_MONTH:g}): {'met' if month <= TARGET_MB_MONTH else 'NOT met'}"]
    return "\n".join(lines)
