"""pitunnel's command line: `invoke --list` shows every task, `invoke --help TASK` its arguments."""

from __future__ import annotations

from invoke import Collection

from benchmarks import tasks as bench_tasks
from lab import tasks as lab_tasks
from pitunnel import tasks as pitunnel_tasks

ns = Collection()
for each in (*pitunnel_tasks.TASKS, lab_tasks.demo):
    ns.add_task(each)
ns.add_collection(lab_tasks.ns)
ns.add_collection(bench_tasks.ns)
