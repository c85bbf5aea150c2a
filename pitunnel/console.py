"""The `pitunnel` command ([project.scripts] in pyproject.toml): Invoke's Program over the product's tasks
(pitunnel/tasks.py) alone, so `pip install .` gives `pitunnel provision-vps` in any folder. The lab and
benchmark tasks stay with `invoke` in the checkout."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from invoke import Collection, Program

from . import tasks


def namespace() -> Collection:
    ns = Collection()
    for task in tasks.TASKS:
        ns.add_task(task)
    return ns


def _version() -> str:
    try:
        return version("pitunnel")
    except PackageNotFoundError:
        return "unknown"


program = Program(namespace=namespace(), name="pitunnel", binary="pitunnel", version=_version())


def main() -> None:
    program.run()
