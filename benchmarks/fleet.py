"""Benchmark: fleet scale. Provision 1, 5, 10, 20 Pis on one VPS, each size on fresh lab hosts, and
measure the wall time and the laptop's peak memory of `invoke provision` (a child process; its peak
RSS comes from os.wait4). Then the isolation run: one Pi unreachable (its link down), every other
Pi must still finish, and the recap must name the unreachable one.

Prints a table and writes benchmarks/results/fleet.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from benchmarks.provision import (INVENTORY, RESULTS, ANSI, bad_hosts, lab_release_version, machine, parse_recap,
                                  pitunnel_argv, run_child, total)

SCALE_TARGET = 2.5
@dataclass
class SizeResult:
    pis: int
    seconds: float
    max_rss_kib: int
    rc: int
    changed: int
    bad_hosts: list[str]
    reachable: int  # Pis answering through the VPS afterwards (ssh host key + http)
    cpu_busy: float  # share of the machine's CPU time busy during the run (the lab hosts share it)
    laptop_cpu_s: float = 0.0  # CPU seconds of `invoke provision` itself (the laptop's side)


@dataclass
class IsolationResult:
    pis: int
    down: str
    seconds: float
    rc: int
    recap_unreachable: list[str]  # hosts the recap counts as unreachable
    recap_failed: list[str]
    finished: list[str]  # Pis whose recap is clean and whose tunnel listens on the VPS
    reachable: int  # of the other Pis, how many answer through the VPS
    named_in_recap: bool
    others_finished: bool
    recap: list[str] = field(default_factory=list)


def pi_names(count: int) -> list[str]:
    return [f"pi{i}" for i in range(1, count + 1)]


def parse_sizes(text: str) -> list[int]:
    """'1,5,10,20' -> [1, 5, 10, 20]; sorted, no repeats, each at least 1."""
    sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"sizes must be whole numbers of 1 or more, such as 1,5,10,20 (got {text!r})")
    return sizes


def cpu_jiffies(proc_stat: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat's first line; idle and iowait count as not busy."""
    fields = [int(x) for x in proc_stat.splitlines()[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return total - fields[3] - fields[4], total


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    spent = after[1] - before[1]
    return (after[0] - before[0]) / spent if spent > 0 else 0.0


def _proc_stat() -> tuple[int, int]:
    with open("/proc/stat") as f:
        return cpu_jiffies(f.read())


def count_reachable(pis: list[str]) -> int:
    from pitunnel.lab.faults import reachable, target

    return sum(1 for pi in pis if reachable(target(pi)))


def listening_pis(output: str) -> list[str]:
    """Pis for which the run printed `ok ... tunnel listening on the VPS`: their provisioning finished."""
    done = []
    for line in ANSI.sub("", output).splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "ok" and "tunnel listening on the VPS" in line:
            done.append(words[1])
    return done


def run_size(pis: int, release: str) -> SizeResult:
    from pitunnel import lab

    lab.up(pis=pis, release=release, inventory=INVENTORY, fresh=True)
    before = _proc_stat()
    run = run_child(pitunnel_argv())
    busy = busy_share(before, _proc_stat())
    recap = parse_recap(run.output)
    result = SizeResult(pis, run.seconds, run.max_rss_kib, run.rc, total(recap, "changed"), bad_hosts(recap),
                        count_reachable(pi_names(pis)), busy, run.cpu_s)
    if run.rc != 0:
        print(ANSI.sub("", run.output)[-3000:])
    print(f"  {pis:>3} Pis: {run.seconds:6.1f} s, peak RSS {run.max_rss_kib / 1024:.0f} MiB, exit {run.rc}, "
          f"reachable {result.reachable}/{pis}, CPU busy {busy:.0%}, pitunnel's own CPU {run.cpu_s:.1f} s", flush=True)
    return result


def run_isolation(pis: int, down: str, release: str) -> IsolationResult:
    from pitunnel import lab
    from pitunnel.lab.plan import make_plan
    from pitunnel.lab.state import LabState
    from pitunnel.lab.system import run as host_run

    lab.up(pis=pis, release=release, inventory=INVENTORY, fresh=True)
    veth = make_plan(LabState.load().pis).host(down).veth
    host_run(["ip", "link", "set", veth, "down"])
    try:
        run = run_child(pitunnel_argv())
    finally:
        host_run(["ip", "link", "set", veth, "up"])
    recap = parse_recap(run.output)
    unreachable = [h for h, c in recap.items() if c.get("unreachable", 0)]
    failed = [h for h, c in recap.items() if c.get("failed", 0)]
    others = [p for p in pi_names(pis) if p != down]
    finished = [p for p in listening_pis(run.output) if p in others and p not in failed and p not in unreachable]
    lines = [ANSI.sub("", line) for line in run.output[run.output.rfind("PLAY RECAP"):].splitlines()]
    return IsolationResult(pis, down, run.seconds, run.rc, unreachable, failed, finished, count_reachable(others),
                           named_in_recap=unreachable == [down] and not failed,
                           others_finished=sorted(finished) == sorted(others), recap=lines)


def table(doc: dict[str, object]) -> str:
    sizes: list[dict[str, object]] = doc["sizes"]  # type: ignore[assignment]
    base = float(sizes[0]["seconds"]) if sizes else float("nan")  # type: ignore[arg-type]
    lines = [f"Fleet scale: `invoke provision` (VPS, then Pis) on fresh lab hosts, Debian {doc['lab_release']}", "",
             "| Pis | wall s | ratio to 1 Pi | peak RSS on the laptop, MiB | pitunnel's own CPU s "
             "| machine CPU busy (2 cores, lab hosts included) | changed | exit | reachable after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in sizes:
        ratio = float(row["seconds"]) / base  # type: ignore[arg-type]
        lines.append(f"| {row['pis']} | {float(row['seconds']):.1f} | {ratio:.2f} | "  # type: ignore[arg-type]
                     f"{int(row['max_rss_kib']) / 1024:.0f} | {_cpu(row.get('laptop_cpu_s'))} | "  # type: ignore[arg-type]
                     f"{float(row.get('cpu_busy', 0)):.0%} | "  # type: ignore[arg-type]
                     f"{row['changed']} | {row['rc']} | "
                     f"{row['reachable']}/{row['pis']} |")
    largest = sizes[-1] if sizes else None
    if largest is not None and int(largest["pis"]) > int(sizes[0]["pis"]):  # type: ignore[arg-type]
        ratio = float(largest["seconds"]) / base  # type: ignore[arg-type]
        lines.append(f"\nTarget: {largest['pis']} Pis in <= {SCALE_TARGET}x the wall time of {sizes[0]['pis']} Pi: "
                     f"{ratio:.2f}x, {'met' if ratio <= SCALE_TARGET else 'NOT met'}")
    iso: dict[str, object] | None = doc.get("isolation")  # type: ignore[assignment]
    if iso:
        others = int(iso["pis"]) - 1  # type: ignore[arg-type]
        ok = iso["named_in_recap"] and iso["others_finished"]
        lines += ["", f"Isolation: {iso['pis']} Pis, {iso['down']}'s link down during `invoke provision`: "
                      f"{float(iso['seconds']):.1f} s, exit {iso['rc']}",  # type: ignore[arg-type]
                  f"- the other Pis that finished (tunnel listening on the VPS): "
                  f"{len(iso['finished'])}/{others}; reachable through the VPS afterwards: "  # type: ignore[arg-type]
                  f"{iso['reachable']}/{others}",
                  f"- recap: unreachable {', '.join(iso['recap_unreachable']) or 'none'}; "  # type: ignore[arg-type]
                  f"failed {', '.join(iso['recap_failed']) or 'none'}",  # type: ignore[arg-type]
                  f"- target (the others finish, the recap names the one): {'met' if ok else 'NOT met'}"]
    return "\n".join(lines)


def _cpu(seconds: object) -> str:
    return f"{float(seconds):.1f}" if isinstance(seconds, int | float) and seconds else "-"


def main(sizes: list[int], release: str = "bookworm", isolation: bool = True, down: str = "") -> dict[str, object]:
    from pitunnel import lab

    results: list[SizeResult] = []
    iso: IsolationResult | None = None
    debian = "unknown"
    try:
        for size in sizes:
            results.append(run_size(size, release))
            debian = lab_release_version()
        if isolation:
            largest = max(sizes)
            if largest < 2:
                raise SystemExit("bench.fleet: the isolation run needs a size of 2 Pis or more")
            iso = run_isolation(largest, down or f"pi{(largest + 1) // 2}", release)
    finally:
        lab.down(inventory=INVENTORY)
    doc: dict[str, object] = {
        "benchmark": "fleet", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
        "release": release, "lab_release": f"{release} {debian}", "sizes": [asdict(r) for r in results],
        "isolation": asdict(iso) if iso else None, "target_ratio": SCALE_TARGET,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps(doc, indent=2))
    print(table(doc))
    return doc
