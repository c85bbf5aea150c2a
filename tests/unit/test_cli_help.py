"""Every task's command line, pinned: `invoke --list`, `invoke --help TASK` for each task and the arguments
Invoke parses (names, short flags, kinds, defaults) must stay exactly as in tests/unit/cli_help.txt,
which was captured from the real `invoke` before the tasks were reorganised (issue 12); and the installed
`pitunnel`'s own --help, --list and --help TASK (issue 24).

After a deliberate change to a flag: `.venv/bin/python tests/unit/test_cli_help.py > tests/unit/cli_help.txt`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from pathlib import Path

from invoke import Collection, Program, Task, __version__
from invoke.loader import FilesystemLoader

from pitunnel.console import PitunnelProgram

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("cli_help.txt")
TASKS = ["demo", "enroll", "migrate", "provision", "provision-pi", "provision-vps", "revoke", "status", "teardown", "verify",
         "bench.datapath", "bench.fleet", "bench.lab", "bench.provision", "bench.recovery",
         "lab.down", "lab.fault", "lab.shell", "lab.status", "lab.up"]


def forget_tasks() -> None:
    """Drop the modules defining tasks, so each run builds them anew: Invoke uses up a task's `help` when it
    parses it, and another test (or an earlier pytest session in this process, as mutmut runs them) may have
    done that to the ones imported already."""
    for name, module in list(sys.modules.items()):
        ours = str(getattr(module, "__file__", None) or "").startswith(str(ROOT)) or \
            name.split(".")[0] in ("pitunnel", "tasks", "lab", "benchmarks")  # wherever imported from (mutmut's copy)
        if ours and any(isinstance(v, Task) for v in vars(module).values()):
            del sys.modules[name]
            parent, _, leaf = name.rpartition(".")  # `from pitunnel import tasks` reads the package's attribute
            if parent in sys.modules and getattr(sys.modules[parent], leaf, None) is module:
                delattr(sys.modules[parent], leaf)


def invoke(*args: str) -> str:
    """What `invoke ARGS` prints, run in this process as the `invoke` binary runs it."""
    forget_tasks()
    program = Program(name="Invoke", binary="inv[oke]", binary_names=["invoke", "inv"], version=__version__)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        program.run(["invoke", "--search-root", str(ROOT), *args], exit=False)
    return out.getvalue()


PRODUCT = ["init", "migrate", "provision", "provision-pi", "provision-vps", "revoke", "rotate-keys", "rotate-vps-hostkey",
           "status", "teardown", "verify"]


def pitunnel(*args: str) -> str:
    """What the installed `pitunnel ARGS` prints (pitunnel.console's own Program), run in this process."""
    forget_tasks()
    fresh = importlib.import_module("pitunnel.tasks")
    ns = Collection()
    for task in fresh.TASKS:
        ns.add_task(task)
    program = PitunnelProgram(namespace=ns, name="pitunnel", binary="pitunnel", version="VERSION")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        program.run(["pitunnel", *args], exit=False)
    return out.getvalue()


def arguments(name: str) -> str:
    """The arguments Invoke builds for a task: names (long and short), kind, default, attribute name (sorted:
    their order in the signature matters only through the short flags, which are pinned here)."""
    forget_tasks()
    module, _ = FilesystemLoader(start=str(ROOT)).load("tasks")
    task = Collection.from_module(module)[name]
    return "".join(sorted(f"  {arg.names} {arg.kind.__name__} {arg.default!r} {arg.attr_name} "
                          f"positional={arg.positional} optional={arg.optional}\n" for arg in task.get_arguments()))


def captured() -> str:
    parts = [(f"invoke {' '.join(args)}", invoke(*args))
             for args in (("--list",), ("--list", "--list-format=json"), *(("--help", t) for t in TASKS))]
    parts += [(f"arguments {t}", arguments(t)) for t in TASKS]
    parts += [(f"pitunnel {' '.join(args)}", pitunnel(*args))
              for args in (("--help",), ("--list",), *(("--help", t) for t in PRODUCT))]
    return "".join(f"$ {title}\n{text}" for title, text in parts)


def sections(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in text.split("\n$ "):
        title, _, body = chunk.removeprefix("$ ").partition("\n")
        found[title] = body
    return found


def test_every_task_list_help_and_flag_is_as_captured_before() -> None:
    want, got = sections(GOLDEN.read_text()), sections(captured())
    assert list(got) == list(want)
    for title in want:
        assert got[title] == want[title], title


if __name__ == "__main__":
    print(captured(), end="")
