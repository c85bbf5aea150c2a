"""Benchmark: fleet scale, pitunnel against the equivalent Ansible playbook (bench.provision's). Provision
1, 5, 10, 20 Pis on one VPS, each size and each tool on fresh lab hosts, and measure the wall time, the
laptop's CPU seconds and its peak memory (the whole process tree of the tool: Ansible's forks and ssh
processes included, benchmarks/treemem.py), and the CPU every lab host used. Then the isolation run, for
both tools: one Pi unreachable (its link down), every other Pi must still finish, and the recap must
name the unreachable one.

Prints a table and writes benchmarks/results/fleet.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.provision import (ANSI, INVENTORY, RESULTS, ChildRun, bad_hosts, lab_release_version, machine,
                                  parse_recap, pitunnel_argv, run_child, total)
from benchmarks.treemem import TreePeak

SCALE_TARGET = 2.5
ANSIBLE_TARGET = 0.5  # pitunnel's wall time at the largest fresh fleet, against Ansible's
FLOOR_TARGET = 1.2  # pitunnel's wall time against the CPU floor its own run set
TOOLS = ("pitunnel", "ansible")


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
    tool: str = "pitunnel"  # or "ansible"
    tree_pss_kib: int = 0  # the tool's whole process tree at its peak (PSS sum; forks share pages once)
    tree_rss_kib: int = 0
    tree_processes: int = 0


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
    tool: str = "pitunnel"


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


def run_tool(tool: str, work: Path) -> ChildRun:
    """One provisioning run of the whole lab inventory by `tool`, as a child process, its tree sampled.
    Ansible's inventory is written from the lab's (benchmarks/ansible/inventory.py), its ssh masters
    in a fresh ControlPath folder: a run never reuses an earlier run's connections."""
    if tool == "pitunnel":
        return run_child(pitunnel_argv(), sample_tree=True)
    from benchmarks.ansible import inventory as ansible_inventory
    from benchmarks.ansible import run as ansible_run
    from pitunnel.inventory import load_inventory

    hosts = ansible_inventory.write(load_inventory(INVENTORY), work / "hosts.yml")
    control = Path(tempfile.mkdtemp(prefix="cp-", dir=work))
    return run_child(ansible_run.playbook_argv(ansible_run.find_playbook_command(), hosts),
                     env=ansible_run.playbook_env(control), sample_tree=True)


def run_size(pis: int, release: str, work: Path, *, preinstalled: bool = False,
             tool: str = "pitunnel") -> SizeResult:
    import lab

    lab.up(pis=pis, release=release, fresh=True)
    if preinstalled:
        preinstall(pi_names(pis))
    before, cpu_before = _proc_stat(), lab_cpu()
    run = run_tool(tool, work)
    busy, cpu_after = busy_share(before, _proc_stat()), lab_cpu()
    used = {name: cpu_after.get(name, 0.0) - cpu_before.get(name, 0.0) for name in cpu_after}
    recap = parse_recap(run.output)
    tree = run.tree or TreePeak()
    result = SizeResult(pis, run.seconds, run.max_rss_kib, run.rc, total(recap, "changed"), bad_hosts(recap),
                        count_reachable(pi_names(pis)), busy, run.cpu_s,
                        pis_cpu_s=sum(v for k, v in used.items() if k in pi_names(pis)),
                        vps_cpu_s=sum(v for k, v in used.items() if k not in pi_names(pis)), preinstalled=preinstalled,
                        tool=tool, tree_pss_kib=tree.pss_kib, tree_rss_kib=tree.rss_kib,
                        tree_processes=tree.processes)
    if run.rc != 0:
        print(ANSI.sub("", run.output)[-3000:])
    print(f"  {tool:<8} {pis:>3} Pis{' (autossh preinstalled)' if preinstalled else ''}: {run.seconds:6.1f} s, "
          f"peak memory {tree.pss_kib / 1024:.0f} MiB PSS / {tree.rss_kib / 1024:.0f} MiB RSS "
          f"in {tree.processes} processes, exit {run.rc}, reachable {result.reachable}/{pis}, "
          f"CPU busy {busy:.0%}, {tool}'s own CPU {run.cpu_s:.1f} s, the Pis' CPU {result.pis_cpu_s:.1f} s, "
          f"the VPS's {result.vps_cpu_s:.1f} s", flush=True)
    return result


def run_isolation(pis: int, down: str, release: str, work: Path, tool: str = "pitunnel") -> IsolationResult:
    import lab

    lab.up(pis=pis, release=release, fresh=True)
    with lab.unplugged(down):
        run = run_tool(tool, work)
    recap = parse_recap(run.output)
    unreachable = [h for h, c in recap.items() if c.get("unreachable", 0)]
    failed = [h for h, c in recap.items() if c.get("failed", 0)]
    others = [p for p in pi_names(pis) if p != down]
    reachable = count_reachable(others)
    if tool == "pitunnel":
        done = listening_pis(run.output)
    else:  # Ansible prints no per-host listener line: a Pi finished when its recap is clean and it answers
        done = [p for p in others if p in recap and reachable == len(others)]
    finished = [p for p in done if p in others and p not in failed and p not in unreachable]
    lines = [ANSI.sub("", line) for line in run.output[run.output.rfind("PLAY RECAP"):].splitlines()]
    return IsolationResult(pis, down, run.seconds, run.rc, unreachable, failed, finished, reachable,
                           named_in_recap=unreachable == [down] and not failed,
                           others_finished=sorted(finished) == sorted(others), recap=lines, tool=tool)


CORES = os.cpu_count() or 1


def table(doc: dict[str, object]) -> str:
    rows = _rows(doc.get("sizes"))
    lines = [f"Fleet scale: `invoke provision` (VPS and Pis) on fresh lab hosts, Debian {doc['lab_release']}", ""]
    mine = [r for r in rows if r.get("tool", "pitunnel") == "pitunnel"]
    for preinstalled in (False, True):
        sizes = [r for r in mine if bool(r.get("preinstalled")) == preinstalled]
        if sizes:
            lines += _size_table(sizes, preinstalled)
    lines += _against_ansible(rows)
    return "\n".join(lines + _isolation_lines(doc))


def _against_ansible(rows: list[dict[str, object]]) -> list[str]:
    """Fresh Pis, each size: pitunnel and the Ansible playbook side by side, and the targets at the largest."""
    fresh = [r for r in rows if not r.get("preinstalled")]
    by_size = {(int(_num(r, "pis")), str(r.get("tool", "pitunnel"))): r for r in fresh}
    sizes = sorted({pis for pis, tool in by_size if tool == "ansible" and (pis, "pitunnel") in by_size})
    if not sizes:
        return []
    lines = ["Against Ansible (fresh Pis; each tool on its own fresh lab hosts; memory: the tool's whole process "
             "tree at its peak, PSS):", "",
             "| Pis | pitunnel wall s | Ansible wall s | pitunnel / Ansible | pitunnel's CPU floor s "
             "| pitunnel / floor | laptop CPU s per Pi (pitunnel / Ansible) | laptop MiB per Pi (pitunnel / Ansible) "
             "| Ansible's processes at peak | exit (pitunnel / Ansible) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for pis in sizes:
        p, a = by_size[(pis, "pitunnel")], by_size[(pis, "ansible")]
        lines.append(f"| {pis} | {_num(p, 'seconds'):.1f} | {_num(a, 'seconds'):.1f} "
                     f"| {_num(p, 'seconds') / max(_num(a, 'seconds'), 1e-9):.2f} | {_floor(p):.1f} "
                     f"| {_num(p, 'seconds') / max(_floor(p), 1e-9):.2f} "
                     f"| {_num(p, 'laptop_cpu_s') / pis:.2f} / {_num(a, 'laptop_cpu_s') / pis:.2f} "
                     f"| {_num(p, 'tree_pss_kib') / 1024 / pis:.1f} / {_num(a, 'tree_pss_kib') / 1024 / pis:.1f} "
                     f"| {int(_num(a, 'tree_processes'))} | {p['rc']} / {a['rc']} |")
    p, a = by_size[(sizes[-1], "pitunnel")], by_size[(sizes[-1], "ansible")]
    versus, floor = _num(p, "seconds") / max(_num(a, "seconds"), 1e-9), _num(p, "seconds") / max(_floor(p), 1e-9)
    return lines + ["", f"Targets at {sizes[-1]} fresh Pis: pitunnel <= {ANSIBLE_TARGET}x Ansible's wall time: "
                        f"{versus:.2f}x, {'met' if versus <= ANSIBLE_TARGET else 'NOT met'}; pitunnel <= "
                        f"{FLOOR_TARGET}x its CPU floor: {floor:.2f}x, {'met' if floor <= FLOOR_TARGET else 'NOT met'}",
                    "(CPU floor: the lab hosts' and the tool's CPU seconds over this machine's cores)", ""]


def _floor(row: dict[str, object]) -> float:
    return (_num(row, "pis_cpu_s") + _num(row, "vps_cpu_s") + _num(row, "laptop_cpu_s")) / CORES


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
        floor = _floor(row)
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
    runs = doc.get("isolation")
    return [line for iso in (runs if isinstance(runs, list) else [runs]) if isinstance(iso, dict) and iso
            for line in _isolation(iso)]


def _isolation(iso: dict[str, object]) -> list[str]:
    others = int(_num(iso, "pis")) - 1
    ok = iso["named_in_recap"] and iso["others_finished"]
    tool = "`invoke provision`" if iso.get("tool", "pitunnel") == "pitunnel" else "the Ansible playbook"
    return ["", f"Isolation: {iso['pis']} Pis, {iso['down']}'s link down during {tool}: "
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
         preinstalled: bool = False, ansible: bool = True) -> dict[str, object]:
    import lab

    tools = TOOLS if ansible else TOOLS[:1]
    if ansible:
        from benchmarks.ansible.run import Missing, preflight

        try:
            preflight(needs_password=True)  # before touching the lab: nothing is installed silently
        except Missing as exc:
            raise SystemExit(f"bench.fleet: {exc} (or run with --no-ansible)") from None
    if isolation and max(sizes) < 2:
        raise SystemExit("bench.fleet: the isolation run needs a size of 2 Pis or more")
    results: list[SizeResult] = []
    isolated: list[IsolationResult] = []
    debian = "unknown"
    with tempfile.TemporaryDirectory(prefix="pitunnel-bench-fleet-") as folder:
        work = Path(folder)
        try:
            for size in sizes:
                for tool in tools:
                    results.append(run_size(size, release, work, tool=tool))
                debian = lab_release_version()
            for size in sizes if preinstalled else []:
                results.append(run_size(size, release, work, preinstalled=True))
            for tool in tools if isolation else ():
                largest = max(sizes)
                isolated.append(run_isolation(largest, down or f"pi{(largest + 1) // 2}", release, work, tool))
        finally:
            lab.down()
    doc: dict[str, object] = {
        "benchmark": "fleet", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
        "release": release, "lab_release": f"{release} {debian}", "sizes": [asdict(r) for r in results],
        "isolation": [asdict(i) for i in isolated], "target_ratio": SCALE_TARGET,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps(doc, indent=2))
    print(table(doc))
    return doc
