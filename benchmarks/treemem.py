"""The peak memory of a process and all its descendants, sampled: the sum of their PSS (proportional set
size, so pages that forked workers share are counted once overall) and of their RSS, at the sample where
each sum was largest. Ansible forks a worker per host and runs an ssh per connection; os.wait4's
ru_maxrss gives only the largest single process, which hides that.

A process the tree leaves behind when its parent exits (ssh's ControlPersist master daemonizes) would
escape: the benchmark makes itself a child subreaper (`subreaper()`), so such orphans become its
children; the sampler counts the children it did not have before the run (`Adopted`), and `reap_adopted`
ends them after the run (they are the run's own processes), adding their CPU time to the run's.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from dataclasses import dataclass


@dataclass
class TreePeak:
    pss_kib: int = 0
    rss_kib: int = 0
    processes: int = 0  # the most processes the tree had at one sample


def descendants(root: int, parents: dict[int, int]) -> list[int]:
    """root and every process whose chain of parents reaches it."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def parent_of(stat: str) -> int:
    """The PPID field of /proc/PID/stat (after the command name, which may hold spaces and parentheses)."""
    return int(stat[stat.rindex(")") + 2:].split()[1])


def rollup(text: str) -> tuple[int, int]:
    """(Pss, Rss) in KiB from /proc/PID/smaps_rollup."""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Rss"):
            values[key] = int(rest.split()[0])
    return values.get("Pss", 0), values.get("Rss", 0)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:  # the process ended between listing and reading
        return None


PR_SET_CHILD_SUBREAPER = 36


def subreaper(on: bool = True) -> None:
    """Orphans of our descendants become our children (prctl(2)), not init's; `on=False` undoes it."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def parents_now() -> dict[int, int]:
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _read(f"/proc/{name}/stat")):
            parents[int(name)] = parent_of(stat)
    return parents


def my_children() -> set[int]:
    me = os.getpid()
    return {pid for pid, parent in parents_now().items() if parent == me}


def sample(root: int, adopted: set[int] = frozenset()) -> tuple[int, int, int]:  # type: ignore[assignment]
    parents = parents_now()
    me = os.getpid()
    roots = [root, *(pid for pid, parent in parents.items() if parent == me and pid in adopted)]
    pss = rss = count = 0
    for pid in {p for r in roots for p in descendants(r, parents)}:
        if (text := _read(f"/proc/{pid}/smaps_rollup")) is not None:
            p, r = rollup(text)
            pss, rss, count = pss + p, rss + r, count + 1
    return pss, rss, count


class TreeSampler:
    """Samples a process tree every `interval` seconds from start() until stop(); `peak` holds the largest sums."""

    def __init__(self, root: int, interval: float = 0.2, before: set[int] | None = None) -> None:
        """`before`: our children from before the run; any other child of ours (but root) is the run's orphan."""
        self.root, self.interval, self.peak = root, interval, TreePeak()
        self.before = before
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> "TreeSampler":
        self._thread.start()
        return self

    def stop(self) -> TreePeak:
        self._done.set()
        self._thread.join()
        return self.peak

    def _loop(self) -> None:
        while not self._done.is_set():
            adopted = my_children() - self.before - {self.root} if self.before is not None else set()
            pss, rss, count = sample(self.root, adopted)
            self.peak = TreePeak(max(self.peak.pss_kib, pss), max(self.peak.rss_kib, rss),
                                 max(self.peak.processes, count))
            self._done.wait(self.interval)


def reap_adopted(before: set[int]) -> float:
    """End the run's orphans (children of ours not in `before`) by PID and reap them: their CPU seconds."""
    cpu = 0.0
    for pid in sorted(my_children() - before):
        try:
            os.kill(pid, signal.SIGTERM)
            _, _, usage = os.wait4(pid, 0)
            cpu += usage.ru_utime + usage.ru_stime
        except (ProcessLookupError, ChildProcessError):
            continue
    return cpu
