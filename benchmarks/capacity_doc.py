"""bench.capacity's figures: the arithmetic from raw readings to per-tunnel costs, the capacity of a 1 GiB VPS,
the JSON document (benchmarks/results/capacity.json) and the printed table. Pure functions: no host needed."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

GIB_KB = 1024 * 1024
ROW_KEYS = ("n", "pss_kb_per_tunnel", "used_kb_per_tunnel", "reconnect_all_s", "left_behind", "refused_logins",
            "provision_vps_cold_s", "provision_vps_nochange_s", "status_s", "verify_s", "reaper_cpu_s_per_h")


@dataclass
class Reading:
    """The VPS at one moment: its sshd processes (count and PSS sum), its used memory (the cgroup's usage
    less its inactive file pages) and the PSS of all its processes, all in kB."""

    sshd_processes: int
    sshd_pss_kb: int
    used_kb: int
    all_pss_kb: int = 0  # PSS of every process of the VPS


@dataclass
class Row:
    n: int  # Pis, one tunnel session each: the lab's pi1 and n - 1 simulated ones
    pss_kb_per_tunnel: int
    used_kb_per_tunnel: int
    reconnect_all_s: float | None  # from the VPS's sshd starting after the power cut until every tunnel listens
    left_behind: int  # tunnels not listening when the wait gave up
    refused_logins: int  # sshd's "past MaxStartups" drops after the power cut
    provision_vps_cold_s: float
    provision_vps_nochange_s: float
    status_s: float
    verify_s: float
    reaper_cpu_s_per_h: float
    # beyond the keys
    sshd_pss_kb_total: int = 0
    used_kb_total: int = 0
    base_used_kb: int = 0  # the VPS with pi1's session alone, less that session: OS, Nginx, reaper
    processes_per_tunnel: float = 0.0
    refused_at_start: int = 0  # MaxStartups drops while the n - 1 simulated Pis first connected
    first_connect_s: float | None = None  # from starting the simulated Pis until every tunnel listened
    exits: dict[str, int] | None = None  # exit code of each timed pitunnel run
    autossh_restarts: int = 0  # after the power cut: simulated Pis' autossh that exited and were started again
    storm: list[dict[str, float | int]] | None = None  # after the power cut: storm_timeline of sshd's journal
    client_failures: dict[str, int] | None = None  # after the power cut: the simulated Pis' ssh errors by kind


def per_tunnel(before: Reading, after: Reading, added: int) -> tuple[int, int, float]:
    """(PSS kB, used kB, sshd processes) each tunnel session added between two readings costs."""
    if added < 1:
        raise ValueError("per_tunnel needs at least one session added")
    return (round((after.sshd_pss_kb - before.sshd_pss_kb) / added), round((after.used_kb - before.used_kb) / added),
            round((after.sshd_processes - before.sshd_processes) / added, 2))


def base_kb(one_session: Reading, pss_kb_per_tunnel: int) -> int:
    """What the VPS's processes use without any tunnel (OS, Nginx, reaper): the PSS of all of them with one
    session, less that session. (The cgroup's usage does not give it: this kernel does not move the charges
    of what ran before the VPS's processes were moved into it.)"""
    return max(0, one_session.all_pss_kb - pss_kb_per_tunnel)


def tunnels_in(limit_kb: int, base: int, used_kb_per_tunnel: int) -> int:
    """How many tunnel sessions fit in `limit_kb` beside `base`, at `used_kb_per_tunnel` each."""
    if used_kb_per_tunnel <= 0:
        return 0
    return max(0, (limit_kb - base) // used_kb_per_tunnel)


def cpu_per_hour(cpu_s: float, window_s: float) -> float:
    """CPU seconds over a measured window, scaled to an hour."""
    return round(cpu_s * 3600 / window_s, 2) if window_s > 0 else 0.0


def used_kb(memory_stat: str, usage_bytes: int) -> int:
    """A cgroup v1's used memory in kB: its usage less the file pages it could drop at once (inactive file)."""
    inactive = 0
    for line in memory_stat.splitlines():
        key, _, value = line.partition(" ")
        if key == "total_inactive_file":
            inactive = int(value)
    return max(0, usage_bytes - inactive) // 1024


def maxstartups_drops(journal: str) -> int:
    """The connections sshd dropped past MaxStartups: each throttling period's count at its end ("exited
    MaxStartups throttling after 00:01:49, 7204 connections dropped"; its own lines per connection are
    LogLevel VERBOSE), else the per-connection lines (9.2 "past MaxStartups", later "exceeded MaxStartups")."""
    totals = [int(m.group(1)) for m in re.finditer(r"exited MaxStartups throttling after \S+, (\d+) connections dropped",
                                                   journal)]
    if totals:
        return sum(totals)
    return sum(1 for line in journal.splitlines() if "past MaxStartups" in line or "exceeded MaxStartups" in line)


SHAPES = ((r"\d+(?:\.\d+){3}", "ADDR"), (r"\d+", "N"))


def failure_kinds(stderr: str) -> dict[str, int]:
    """The simulated Pis' ssh errors (their stderr, LogLevel ERROR) counted by kind: each line with its
    addresses and numbers made generic ("ssh: connect to host ADDR port N: Connection timed out"), most first."""
    kinds: dict[str, int] = {}
    for line in stderr.splitlines():
        line = line.strip()
        if not line:
            continue
        for pattern, word in SHAPES:
            line = re.sub(pattern, word, line)
        kinds[line] = kinds.get(line, 0) + 1
    return dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))


# each kind: lines with every word of one of its tuples ("[preauth]" alone would count "Postponed publickey ...
# [preauth]", a step of every login)
STORM_EVENTS: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("logins", (("Accepted publickey",),)),
    ("given_up_preauth", (("Connection closed by", "[preauth]"), ("Connection reset by", "[preauth]"),
                          ("Disconnected from", "[preauth]"), ("Timeout before authentication",),
                          ("banner exchange",))),
    ("dropped", (("past MaxStartups",), ("exceeded MaxStartups",), ("drop connection #",))))


def storm_timeline(journal: str, start: float, step: float = 10.0) -> list[dict[str, float | int]]:
    """sshd's journal (`journalctl -o short-monotonic`) from `start` (the kernel's monotonic seconds: sshd
    starting) in windows of `step` seconds: logins accepted, connections closed before authentication (the
    client gave up or was cut off) and MaxStartups drops (sshd logs these one by one at LogLevel VERBOSE)."""
    counts: dict[int, Counter[str]] = {}
    for line in journal.splitlines():
        stamp = re.match(r"\[\s*(\d+\.\d+)\]", line)
        if not stamp or float(stamp.group(1)) < start:
            continue
        kind = next((k for k, marks in STORM_EVENTS if any(all(w in line for w in words) for words in marks)), None)
        if kind:
            counts.setdefault(int((float(stamp.group(1)) - start) // step), Counter())[kind] += 1
    return [{"from_s": i * step, **{k: counts.get(i, Counter())[k] for k, _ in STORM_EVENTS}}
            for i in range(max(counts, default=-1) + 1)]


def document(rows: list[Row], *, date: str, machine: str, revision: str, release: str) -> dict[str, object]:
    """capacity.json: the issue's keys first; tunnels_in_1gib from the largest run's per-tunnel cost and base."""
    largest = max(rows, key=lambda r: r.n) if rows else None
    fit = tunnels_in(GIB_KB, largest.base_used_kb, largest.used_kb_per_tunnel) if largest else 0
    return {"date": date, "machine": machine, "revision": revision, "tunnels_in_1gib": fit,
            "tunnels_in_1gib_how": "computed: (1 GiB - the VPS's base, PSS of all its processes with one session less that "
                                   "session) / used kB per tunnel, at the largest n (not measured with a memory limit)",
            "release": release, "rows": [asdict(r) for r in rows]}


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(doc: dict[str, object]) -> str:
    found = doc.get("rows")
    rows: list[dict[str, Any]] = [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []
    lines = [f"Capacity of one VPS ({doc['date']}, {doc['machine']}, revision {doc['revision']}, "
             f"lab hosts {doc.get('release', '?')})", "",
             "| Pis | sshd PSS per tunnel kB | used per tunnel kB | sshd processes per tunnel | used at n MB "
             "| all listen again after power cut s | left behind | refused (MaxStartups) | provision-vps cold s "
             "| no-change s | status s | verify s | reaper CPU s/h |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['pss_kb_per_tunnel']} | {r['used_kb_per_tunnel']} | "
                     f"{r.get('processes_per_tunnel', '-')} | {r.get('used_kb_total', 0) / 1024:.0f} | "
                     f"{_s(r['reconnect_all_s'])} | {r['left_behind']} | {r['refused_logins']} | "
                     f"{_s(r['provision_vps_cold_s'])} | {_s(r['provision_vps_nochange_s'])} | {_s(r['status_s'])} | "
                     f"{_s(r['verify_s'])} | {r['reaper_cpu_s_per_h']} |")
    lines += ["", f"Tunnels in a 1 GiB VPS: {doc['tunnels_in_1gib']} ({doc.get('tunnels_in_1gib_how', '')})"]
    return "\n".join(lines)
