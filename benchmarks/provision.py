"""Benchmark: provisioning speed, pitunnel against an equivalent Ansible playbook, on the same lab hosts.

For each side: a cold run on fresh lab hosts (`provision-vps` + `provision-pi` as `invoke provision`;
Ansible: benchmarks/ansible/site.yml), checked end to end (pitunnel's `verify`, and the reachability
probe of the lab's faults), then no-change reruns. Both run as child processes from their command
line, so each wall time includes the tool's own start. Prints a table, writes
benchmarks/results/provision.json. Not a test: it asserts nothing, but it says when a target is missed.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.treemem import TreePeak, TreeSampler, my_children, reap_adopted, subreaper
from lab import INVENTORY

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(ROOT)]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
RECAP_LINE = re.compile(r"^(\S+)\s*:\s*((?:\w+=\d+\s*)+)$")
ROUND_TRIP_TARGET = 3
COLD_TARGET = 0.5
RERUN_TARGET = 0.25


# ---------------------------------------------------------------- running a child and reading its recap
@dataclass
class ChildRun:
    """One timed run of a command: wall seconds, exit code, output, and peak RSS of its process tree."""

    argv: list[str]
    seconds: float
    rc: int
    output: str
    max_rss_kib: int  # largest resident set of the child or any descendant it waited for (wait4)
    cpu_s: float = 0.0  # user + system CPU seconds of the child and the descendants it waited for
    tree: TreePeak | None = None  # the whole process tree's peak PSS and RSS, when sampled


def run_child(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path = ROOT,
              sample_tree: bool = False) -> ChildRun:
    """Run argv to its end; time it, and read its peak RSS from os.wait4's rusage (and with `sample_tree`,
    the peak memory of its whole process tree, orphans it leaves included: benchmarks/treemem.py)."""
    before = None
    if sample_tree:
        subreaper()
        before = my_children()
    with tempfile.TemporaryFile(mode="w+") as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        sampler = TreeSampler(proc.pid, before=before).start() if before is not None else None
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        tree = sampler.stop() if sampler else None
        orphans_cpu = reap_adopted(before) if before is not None else 0.0
        if before is not None:
            subreaper(False)  # orphans of whatever runs next go to init again, as before
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        text = out.read()
    return ChildRun(argv, seconds, proc.returncode, text, int(usage.ru_maxrss),
                    usage.ru_utime + usage.ru_stime + orphans_cpu, tree)


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """Every host's counters from the last `PLAY RECAP` (pitunnel's or Ansible's): host -> {ok: 3, ...}."""
    text = ANSI.sub("", output)
    start = text.rfind("PLAY RECAP")
    if start < 0:
        return {}
    recap: dict[str, dict[str, int]] = {}
    for line in text[start:].splitlines()[1:]:
        match = RECAP_LINE.match(line.strip())
        if match:
            recap[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return recap


def total(recap: dict[str, dict[str, int]], counter: str) -> int:
    return sum(host.get(counter, 0) for host in recap.values())


def bad_hosts(recap: dict[str, dict[str, int]]) -> list[str]:
    return [h for h, c in recap.items() if c.get("failed", 0) or c.get("unreachable", 0)]


def pitunnel_argv(*extra: str) -> list[str]:
    return [*INVOKE, "provision", "-i", str(INVENTORY), *extra]


# ---------------------------------------------------------------- one side's runs
@dataclass
class SideResult:
    name: str
    cold_s: list[float] = field(default_factory=list)
    rerun_s: list[float] = field(default_factory=list)
    cold_changed: list[int] = field(default_factory=list)
    rerun_changed: list[int] = field(default_factory=list)
    cold_rss_kib: list[int] = field(default_factory=list)
    rerun_rss_kib: list[int] = field(default_factory=list)
    rerun_round_trips: dict[str, int] = field(default_factory=dict)  # pitunnel only: per host, worst rerun
    cold_round_trips: dict[str, int] = field(default_factory=dict)
    # pitunnel only: the same no-change rerun as two commands, provision-vps then provision-pi
    rerun_round_trips_by_command: dict[str, dict[str, int]] = field(default_factory=dict)
    verified: list[str] = field(default_factory=list)  # one line per check after each cold run


def _check(run: ChildRun, side: SideResult, what: str) -> dict[str, dict[str, int]]:
    recap = parse_recap(run.output)
    if run.rc != 0 or not recap or bad_hosts(recap):
        tail = "\n".join(run.output.strip().splitlines()[-25:])
        raise RuntimeError(f"{side.name} {what} failed (exit {run.rc}, bad hosts {bad_hosts(recap)}):\n{tail}")
    return recap


def verify_lab(pis: list[str]) -> list[str]:
    """After a cold run: pitunnel's `verify` (end to end, and nothing more open), and the lab's probe."""
    from lab import target, wait_recovered

    lines = []
    verify = run_child([*INVOKE, "verify", "-i", str(INVENTORY)])
    passed = verify.rc == 0
    lines.append(f"pitunnel verify: {'passed' if passed else 'FAILED'}")
    if not passed:
        lines.append(ANSI.sub("", verify.output).strip()[-1500:])
    for pi in pis:
        seconds = wait_recovered(target(pi), time.monotonic(), 30)
        lines.append(f"{pi} reachable through the VPS (ssh host key + http): "
                     f"{'yes' if seconds is not None else 'NO'}")
    return lines


def bench_pitunnel(pis: int, release: str, cold_runs: int, reruns: int) -> SideResult:
    import lab

    side = SideResult("pitunnel")
    for _ in range(cold_runs):
        lab.up(pis=pis, release=release, fresh=True)
        cold = run_child(pitunnel_argv())
        recap = _check(cold, side, "cold run")
        side.cold_s.append(cold.seconds)
        side.cold_changed.append(total(recap, "changed"))
        side.cold_rss_kib.append(cold.max_rss_kib)
        side.cold_round_trips = {h: c.get("round_trips", 0) for h, c in recap.items()}
        side.verified += verify_lab([f"pi{i}" for i in range(1, pis + 1)])
    for _ in range(reruns):
        again = run_child(pitunnel_argv())
        recap = _check(again, side, "rerun")
        side.rerun_s.append(again.seconds)
        side.rerun_changed.append(total(recap, "changed"))
        side.rerun_rss_kib.append(again.max_rss_kib)
        for host, counters in recap.items():
            side.rerun_round_trips[host] = max(side.rerun_round_trips.get(host, 0), counters.get("round_trips", 0))
    for command in ("provision-vps", "provision-pi"):
        split = run_child([*INVOKE, command, "-i", str(INVENTORY)])
        recap = _check(split, side, f"rerun as {command}")
        side.rerun_round_trips_by_command[command] = {h: c.get("round_trips", 0) for h, c in recap.items()}
    return side


def equivalence_check() -> tuple[int, list[str]]:
    """pitunnel --check against what Ansible left: how many operations pitunnel would still change."""
    check = run_child(pitunnel_argv("--check"))
    lines = [" ".join(ANSI.sub("", line).split()) for line in check.output.splitlines()]
    would = [line for line in lines if line.startswith("would change")]
    return len(would), would


def bench_ansible(pis: int, release: str, cold_runs: int, reruns: int) -> SideResult:
    from benchmarks.ansible import inventory as ansible_inventory
    from benchmarks.ansible import run as ansible_run
    import lab
    from pitunnel.inventory import load_inventory

    command = ansible_run.preflight(needs_password=True)
    side = SideResult("ansible")
    with tempfile.TemporaryDirectory(prefix="pitunnel-bench-ansible-") as work:
        hosts = Path(work) / "hosts.yml"

        def play(tag: str) -> ChildRun:
            control = Path(tempfile.mkdtemp(prefix=f"cp-{tag}-", dir=work))
            return run_child(ansible_run.playbook_argv(command, hosts), env=ansible_run.playbook_env(control))

        for index in range(cold_runs):
            lab.up(pis=pis, release=release, fresh=True)
            ansible_inventory.write(load_inventory(INVENTORY), hosts)
            cold = play(f"cold{index}")
            recap = _check(cold, side, "cold run")
            side.cold_s.append(cold.seconds)
            side.cold_changed.append(total(recap, "changed"))
            side.cold_rss_kib.append(cold.max_rss_kib)
            side.verified += verify_lab([f"pi{i}" for i in range(1, pis + 1)])
            count, would = equivalence_check()
            side.verified.append(f"pitunnel --check on Ansible's result: {count} operation(s) would change"
                                 + (": " + "; ".join(would) if would else " (same end state)"))
        for index in range(reruns):
            again = play(f"rerun{index}")
            recap = _check(again, side, "rerun")
            side.rerun_s.append(again.seconds)
            side.rerun_changed.append(total(recap, "changed"))
            side.rerun_rss_kib.append(again.max_rss_kib)
            side.rerun_round_trips = {h: c.get("ok", 0) + c.get("changed", 0) for h, c in recap.items()}
    return side


# ---------------------------------------------------------------- the table
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(mine: float, theirs: float) -> float:
    return mine / theirs if theirs else float("nan")


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "NOT met"


def summary(doc: dict[str, object]) -> dict[str, object]:
    """The figures the table shows, from the raw results."""
    p: dict[str, object] = doc["pitunnel"]  # type: ignore[assignment]
    a: dict[str, object] = doc["ansible"]  # type: ignore[assignment]
    cold_p, cold_a = median(p["cold_s"]), median(a["cold_s"])  # type: ignore[arg-type]
    rerun_p, rerun_a = median(p["rerun_s"]), median(a["rerun_s"])  # type: ignore[arg-type]
    trips: dict[str, int] = p["rerun_round_trips"]  # type: ignore[assignment]
    worst = max(trips.values()) if trips else 0
    return {"cold_pitunnel_s": cold_p, "cold_ansible_s": cold_a, "cold_ratio": ratio(cold_p, cold_a),
            "rerun_pitunnel_s": rerun_p, "rerun_ansible_s": rerun_a, "rerun_ratio": ratio(rerun_p, rerun_a),
            "rerun_round_trips_max": worst,
            "targets": {"cold_ratio<=0.5": verdict(ratio(cold_p, cold_a), COLD_TARGET),
                        "rerun_ratio<=0.25": verdict(ratio(rerun_p, rerun_a), RERUN_TARGET),
                        f"rerun_round_trips<={ROUND_TRIP_TARGET}": verdict(worst, ROUND_TRIP_TARGET)}}


def _mib(values: list[int]) -> str:
    return f"{max(values) / 1024:.0f}" if values else "-"


def _hosts(counts: dict[str, int]) -> str:
    return ", ".join(f"{h} {n}" for h, n in counts.items()) or "-"


def table(doc: dict[str, object]) -> str:
    s = summary(doc)
    p: dict[str, object] = doc["pitunnel"]  # type: ignore[assignment]
    a: dict[str, object] = doc["ansible"]  # type: ignore[assignment]
    t: dict[str, str] = s["targets"]  # type: ignore[assignment]
    lines = [
        f"Provisioning speed: {doc['pis']} Pi(s) + 1 VPS, lab hosts Debian {doc['lab_release']}; "
        f"{doc['cold_runs']} cold run(s), {doc['reruns']} rerun(s) per side (median shown)",
        "",
        "| | pitunnel | Ansible | pitunnel / Ansible | target |",
        "|---|---|---|---|---|",
        f"| cold run, wall s | {s['cold_pitunnel_s']:.1f} | {s['cold_ansible_s']:.1f} | {s['cold_ratio']:.2f} "
        f"| <= 0.5 ({t['cold_ratio<=0.5']}) |",
        f"| no-change rerun, wall s | {s['rerun_pitunnel_s']:.1f} | {s['rerun_ansible_s']:.1f} "
        f"| {s['rerun_ratio']:.2f} | <= 0.25 ({t['rerun_ratio<=0.25']}) |",
        f"| changed on the cold run (all hosts) | {_join(p['cold_changed'])} | {_join(a['cold_changed'])} | | |",
        f"| changed on the rerun (all hosts) | {_join(p['rerun_changed'])} | {_join(a['rerun_changed'])} | | 0 |",
        f"| remote round trips per host, cold | {_hosts(p['cold_round_trips'])} | | | |",  # type: ignore[arg-type]
        f"| remote round trips per host, rerun | {_hosts(p['rerun_round_trips'])} "  # type: ignore[arg-type]
        f"| {_hosts(a['rerun_round_trips'])} (tasks run, at least 1 each) | | "  # type: ignore[arg-type]
        f"<= {ROUND_TRIP_TARGET} ({t[f'rerun_round_trips<={ROUND_TRIP_TARGET}']}) |",
        f"| round trips per host, rerun as two commands | {_by_command(p)} | | | |",
        f"| peak RSS on the laptop, MiB (cold / rerun) | {_mib(p['cold_rss_kib'])} / {_mib(p['rerun_rss_kib'])} "  # type: ignore[arg-type]
        f"| {_mib(a['cold_rss_kib'])} / {_mib(a['rerun_rss_kib'])} | | |",  # type: ignore[arg-type]
    ]
    lines += ["", "Checks after each cold run:"]
    lines += [f"- pitunnel: {v}" for v in p["verified"]]  # type: ignore[attr-defined]
    lines += [f"- Ansible: {v}" for v in a["verified"]]  # type: ignore[attr-defined]
    worst = s["rerun_round_trips_max"]
    if isinstance(worst, int) and worst > ROUND_TRIP_TARGET:
        over = [h for h, n in p["rerun_round_trips"].items() if n > ROUND_TRIP_TARGET]  # type: ignore[attr-defined]
        lines += ["", f"TARGET MISSED: a no-change rerun of `invoke provision` made more than {ROUND_TRIP_TARGET} "
                      f"round trips on {', '.join(over)} (see the rerun row)."]
    return "\n".join(lines)


def _by_command(side: dict[str, object]) -> str:
    split: dict[str, dict[str, int]] = side.get("rerun_round_trips_by_command") or {}  # type: ignore[assignment]
    return "; ".join(f"{command}: {_hosts(counts)}" for command, counts in split.items()) or "-"


def _join(values: object) -> str:
    return ", ".join(str(v) for v in values) if isinstance(values, list) and values else "-"  # type: ignore[misc]


def lab_release_version() -> str:
    import lab

    try:
        return (Path(lab.record("vps").root) / "etc/debian_version").read_text().strip()
    except Exception:  # the lab is down or half up: say so rather than guess
        return "unknown"


def machine() -> str:
    import platform

    return f"{os.cpu_count()} cores, Linux {platform.release()}, {platform.machine()}"


def main(pis: int = 2, release: str = "bookworm", cold_runs: int = 1, reruns: int = 3) -> dict[str, object]:
    from benchmarks.ansible.run import Missing, preflight
    import lab

    try:
        preflight(needs_password=True)  # before touching the lab: nothing is installed silently
    except Missing as exc:
        raise SystemExit(f"bench.provision: {exc}") from None
    try:
        pitunnel_side = bench_pitunnel(pis, release, cold_runs, reruns)
        debian = lab_release_version()
        ansible_side = bench_ansible(pis, release, cold_runs, reruns)
    finally:
        lab.down()
    doc: dict[str, object] = {
        "benchmark": "provision", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
        "pis": pis, "release": release, "lab_release": f"{release} {debian}", "cold_runs": cold_runs,
        "reruns": reruns, "pitunnel": asdict(pitunnel_side), "ansible": asdict(ansible_side),
    }
    doc["summary"] = summary(doc)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "provision.json").write_text(json.dumps(doc, indent=2))
    print(table(doc))
    return doc
