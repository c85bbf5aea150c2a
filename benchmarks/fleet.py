"""Benchmark: fleet scale. Provision 1, 5, 10, 20 Pis on one VPS, each size on fresh lab hosts, and
measure the wall time and the laptop's peak memory of `invoke provision` (a child process; its peak
RSS comes from os.wait4). Then the isolation run: one Pi unreachable (its link down), every other
Pi must still finish, and the recap must name the unreachable one.

Prints a table and writes benchmarks/results/fleet.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

from benchmarks.provision import (RESULTS, ANSI, bad_hosts, lab_release_version, machine, parse_recap,
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
    pis_cpu_s: float = 0.0  # CPU seconds all the Pis used during the run (everything in their containers)
    vps_cpu_s: float = 0.0
    preinstalled: bool = False  # autossh was on the Pis before the run (its install out of the measure)


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
    from lab import reachable, target

    return sum(1 for pi in pis if reachable(target(pi)))


def listening_pis(output: str) -> list[str]:
    """Pis for which the run printed `ok ... tunnel listening on the VPS`: their provisioning finished."""
    done = []
    for line in ANSI.sub("", output).splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "ok" and "tunnel listening on the VPS" in line:
            done.append(words[1])
    return done


def lab_cpu() -> dict[str, float]:
    """CPU seconds each lab host has used so far."""
    import lab

    return lab.cpu_seconds()


def preinstall(pis: list[str], package: str = "autossh") -> None:
    """Install the Pis' package before the clock starts, all Pis at once, as an image that ships it would."""
    from concurrent.futures import ThreadPoolExecutor

    import lab
    from pitunnel.ops import apt_install_commands

    script = " && ".join(apt_install_commands([package], update=True))
    with ThreadPoolExecutor(max_workers=len(pis)) as pool:
        list(pool.map(lambda pi: lab.sh(pi, script, timeout=600), pis))


def run_size(pis: int, release: str, *, preinstalled: bool = False) -> SizeResult:
    import lab

    lab.up(pis=pis, release=release, fresh=True)
    if preinstalled:
        preinstall(pi_names(pis))
    before, cpu_before = _proc_stat(), lab_cpu()
    run = run_child(pitunnel_argv())
    busy, cpu_after = busy_share(before, _proc_stat()), lab_cpu()
    used = {name: cpu_after.get(name, 0.0) - cpu_before.get(name, 0.0) for name in cpu_after}
    recap = parse_recap(run.output)
    result = SizeResult(pis, run.seconds, run.max_rss_kib, run.rc, total(recap, "changed"), bad_hosts(recap),
                        count_reachable(pi_names(pis)), busy, run.cpu_s,
                        pis_cpu_s=sum(v for k, v in used.items() if k in pi_names(pis)),
                        vps_cpu_s=sum(v for k, v in used.items() if k not in pi_names(pis)), preinstalled=preinstalled)
    if run.rc != 0:
        print(ANSI.sub("", run.output)[-3000:])
    print(f"  {pis:>3} Pis{' (autossh preinstalled)' if preinstalled else ''}: {run.seconds:6.1f} s, "
          f"peak RSS {run.max_rss_kib / 1024:.0f} MiB, exit {run.rc}, reachable {result.reachable}/{pis}, "
          f"CPU busy {busy:.0%}, pitunnel's own CPU {run.cpu_s:.1f} s, the Pis' CPU {result.pis_cpu_s:.1f} s, "
          f"the VPS's {result.vps_cpu_s:.1f} s", flush=True)
    return result


def run_isolation(pis: int, down: str, release: str) -> IsolationResult:
    import lab

    lab.up(pis=pis, release=release, fresh=True)
    with lab.unplugged(down):
        run = run_child(pitunnel_argv())
    recap = parse_recap(run.output)
    unreachable = [h for h, c in recap.items() if c.get("unreachable", 0)]
    failed = [h for h, c in recap.items() if c.get("failed", 0)]
    others = [p for p in pi_names(pis) if p != down]
    finished = [p for p in listening_pis(run.output) if p in others and p not in failed and p not in unreachable]
    lines = [ANSI.sub("", line) for line in run.output[run.output.rfind("PLAY RECAP"):].splitlines()]
    return IsolationResult(pis, down, run.seconds, run.rc, unreachable, failed, finished, count_reachable(others),
                           named_in_recap=unreachable == [down] and not failed,
                           others_finished=sorted(finished) == sorted(others), recap=lines)


CORES = os.cpu_count() or 1


def table(doc: dict[str, object]) -> str:
    rows = _rows(doc.get("sizes"))
    lines = [f"Fleet scale: `invoke provision` (VPS and Pis) on fresh lab hosts, Debian {doc['lab_release']}", ""]
    for preinstalled in (False, True):
        sizes = [r for r in rows if bool(r.get("preinstalled")) == preinstalled]
        if sizes:
            lines += _size_table(sizes, preinstalled)
    return "\n".join(lines + _isolation_lines(doc))


def _size_table(sizes: list[dict[str, object]], preinstalled: bool) -> list[str]:
    base = _num(sizes[0], "seconds")
    lines = ["With autossh already on the Pis (its install out of the measure):" if preinstalled else
             "Fresh Pis (autossh installed by the run):",
             "", "| Pis | wall s | ratio to 1 Pi | peak RSS on the laptop, MiB | pitunnel's own CPU s "
             "| the Pis' CPU s (per Pi) | the VPS's CPU s | CPU floor s | machine CPU busy | changed | exit "
             "| reachable after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in sizes:
        ratio = _num(row, "seconds") / base
        pis = int(_num(row, "pis"))
        hosts = _num(row, "pis_cpu_s") + _num(row, "vps_cpu_s")
        floor = (hosts + _num(row, "laptop_cpu_s")) / CORES
        lines.append(f"| {pis} | {_num(row, 'seconds'):.1f} | {ratio:.2f} | "
                     f"{_num(row, 'max_rss_kib') / 1024:.0f} | {_cpu(row.get('laptop_cpu_s'))} | "
                     f"{_per(row.get('pis_cpu_s'), pis)} | {_cpu(row.get('vps_cpu_s'))} | "
                     f"{f'{floor:.1f}' if hosts else '-'} | {_num(row, 'cpu_busy'):.0%} | "
                     f"{row['changed']} | {row['rc']} | {row['reachable']}/{pis} |")
    largest = sizes[-1]
    if _num(largest, "pis") > _num(sizes[0], "pis"):
        ratio = _num(largest, "seconds") / base
        lines.append(f"\nTarget: {largest['pis']} Pis in <= {SCALE_TARGET}x the wall time of {sizes[0]['pis']} Pi: "
                     f"{ratio:.2f}x, {'met' if ratio <= SCALE_TARGET else 'NOT met'}")
    lines.append(f"(CPU floor: the lab hosts' and pitunnel's CPU seconds over this machine's {CORES} cores, "
                 "the least wall time the run could take here)\n")
    return lines


def _isolation_lines(doc: dict[str, object]) -> list[str]:
    iso = doc.get("isolation")
    if not isinstance(iso, dict) or not iso:
        return []
    others = int(_num(iso, "pis")) - 1
    ok = iso["named_in_recap"] and iso["others_finished"]
    return ["", f"Isolation: {iso['pis']} Pis, {iso['down']}'s link down during `invoke provision`: "
                f"{_num(iso, 'seconds'):.1f} s, exit {iso['rc']}",
            f"- the other Pis that finished (tunnel listening on the VPS): "
            f"{len(_names(iso, 'finished'))}/{others}; reachable through the VPS afterwards: "
            f"{iso['reachable']}/{others}",
            f"- recap: unreachable {', '.join(_names(iso, 'recap_unreachable')) or 'none'}; "
            f"failed {', '.join(_names(iso, 'recap_failed')) or 'none'}",
            f"- target (the others finish, the recap names the one): {'met' if ok else 'NOT met'}"]


def _rows(value: object) -> list[dict[str, object]]:
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def _num(row: dict[str, object], key: str) -> float:
    """A number out of a result row read back from JSON; absent or null (an older run's row) is 0."""
    value = row.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def _names(row: dict[str, object], key: str) -> list[str]:
    value = row.get(key)
    return [str(v) for v in value] if isinstance(value, list) else []


def _per(seconds: object, count: int) -> str:
    if not isinstance(seconds, int | float) or not seconds:
        return "-"
    return f"{float(seconds):.1f} ({float(seconds) / count:.2f})"


def _cpu(seconds: object) -> str:
    return f"{float(seconds):.1f}" if isinstance(seconds, int | float) and seconds else "-"


def main(sizes: list[int], release: str = "bookworm", isolation: bool = True, down: str = "",
         preinstalled: bool = False) -> dict[str, object]:
    import lab

    results: list[SizeResult] = []
    iso: IsolationResult | None = None
    debian = "unknown"
    try:
        for size in sizes:
            results.append(run_size(size, release))
            debian = lab_release_version()
        for size in sizes if preinstalled else []:
            results.append(run_size(size, release, preinstalled=True))
        if isolation:
            largest = max(sizes)
            if largest < 2:
                raise SystemExit("bench.fleet: the isolation run needs a size of 2 Pis or more")
            iso = run_isolation(largest, down or f"pi{(largest + 1) // 2}", release)
    finally:
        lab.down()
    doc: dict[str, object] = {
        "benchmark": "fleet", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
        "release": release, "lab_release": f"{release} {debian}", "sizes": [asdict(r) for r in results],
        "isolation": asdict(iso) if iso else None, "target_ratio": SCALE_TARGET,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps(doc, indent=2))
    print(table(doc))
    return doc
