"""The `pitunnel` command ([project.scripts] in pyproject.toml): a program of its own over the product's tasks
(pitunnel/tasks.py) alone, so `pip install .` gives `pitunnel provision-vps` in any folder.

Built on Invoke's Program, but its top level offers only what a pitunnel user needs: --help, --list,
--version and shell completion; none of Invoke's own flags (--echo, --pty, --dry, -f...), so no letter
clashes with a task's. A task's flags given before its name work as after it (`pitunnel -i hosts.yml -l pi1
verify`, as with ansible-playbook). A wrong command line is one line naming the flag and the fix, and exits 3
(pitunnel.failures.USAGE) before anything runs. The lab and benchmark tasks stay with `invoke` in the
checkout, which keeps Invoke's own flags."""

from __future__ import annotations

import copy
import inspect
import os
import re
import sys
from importlib.metadata import PackageNotFoundError, version

from invoke import Argument, Collection, Exit, ParseError, Program
from invoke.completion.complete import complete, print_completion_script
from invoke.parser import ParserContext

from . import failures, tasks


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


class PitunnelProgram(Program):
    """`pitunnel [--help [TASK] | --list | --version] TASK [flags]`."""

    def core_args(self) -> list[Argument]:
        return [
            Argument(names=("help", "h"), optional=True, help="show this help, or a task's flags: --help TASK"),
            Argument(names=("list",), kind=bool, default=False, help="list the tasks"),
            Argument(names=("version", "V"), kind=bool, default=False, help="show pitunnel's version"),
            Argument(names=("print-completion-script",), kind=str, default="",
                     help="print the shell completion script for bash, zsh or fish (e.g. "
                          "`source <(pitunnel --print-completion-script bash)`)"),
            Argument(names=("complete",), kind=bool, default=False, help="(for the completion script)"),
        ]

    def task_args(self) -> list[Argument]:
        return []

    def parse_core(self, argv: list[str] | None) -> None:
        self.normalize_argv(argv)
        if "--complete" not in self.argv:  # completion reads the command line as typed
            self.argv = [self.argv[0], *flags_after_task(self.argv[1:], self.namespace or namespace())]
        try:
            self.parse_core_args()
        except ParseError as exc:
            raise Exit(self.usage(exc), code=failures.USAGE) from None
        if self.args.version.value:
            self.print_version()
            raise Exit
        if self.args["print-completion-script"].value:
            print_completion_script(shell=self.args["print-completion-script"].value, names=self.binary_names)
            raise Exit

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise Exit(self.usage(exc), code=failures.USAGE) from None
        except ValueError:  # a flag's value of the wrong kind (--forks x)
            raise Exit(f"pitunnel: {not_a_number(self.argv)}", code=failures.USAGE) from None

    def parse_cleanup(self) -> None:
        wanted = self.args.help.value
        if wanted is True:
            self.print_help()
            raise Exit
        if wanted:
            if wanted not in self.parser.contexts:
                raise Exit(f"pitunnel --help {wanted}: no task named {wanted!r}. Fix: pitunnel --list shows the tasks",
                           code=failures.USAGE)
            self.print_task_help(wanted)
            raise Exit
        if self.args.list.value:
            self.list_tasks()
            raise Exit
        if self.args.complete.value:
            complete(names=self.binary_names, core=self.core, initial_context=self.initial_context,
                     collection=self.collection, parser=self._make_parser())
        if not self.tasks:
            self.print_help()
            raise Exit

    def update_config(self, merge: bool = True) -> None:
        """No run-time settings of Invoke's (its --echo, --pty, --dry...): pitunnel's tasks take their own."""
        if merge:
            self.config.merge()

    def print_help(self) -> None:
        print(f"Usage: {self.binary} TASK [flags]   (flags may also come before TASK)")
        print(f"       {self.binary} --help TASK    (a task's flags)\n")
        print("Options:\n")
        self.print_columns([t for t in self.initial_context.help_tuples() if not t[0].startswith("--complete")])
        self.list_tasks()
        print("Exit codes: 0 done, 2 a host failed, 4 a host unreachable (6: both), 3 nothing was touched "
              "(the command line or the inventory is wrong), 130 Ctrl-C. More: docs/cli.md\n")

    def print_task_help(self, name: str) -> None:
        print(f"Usage: {self.binary} {name} [flags]\n")
        for line in (inspect.getdoc(self.collection[name]) or "").splitlines():
            print(self.leading_indent + line if line.strip() else "")
        print("\nFlags:")
        context = self.parser.contexts[name]
        counted = [a.names for a in context.args.values() if a.incrementable]  # -v, -vv: no value to give
        self.print_columns([(_counted(spec, counted), text) for spec, text in context.help_tuples()])

    def task_list_opener(self, extra: str = "") -> str:
        return "Tasks"

    def usage(self, exc: ParseError) -> str:
        """Invoke's parse error as one line naming the flag (or task) and the fix."""
        task = exc.context.name if exc.context is not None and exc.context.name else None
        text = str(exc)
        where = f"pitunnel {task}" if task else "pitunnel"
        helps = f"pitunnel --help {task}" if task else "pitunnel --help"
        needs = re.fullmatch(r"Flag <Argument: ([\w-]+)(?: \((\w)\))?(?: \[\w+\])?> needed value and was not given one!?",
                             text)  # `[int]`: the kind, for a flag that takes a number
        if needs:
            flag = f"-{needs.group(2)}/--{needs.group(1)}" if needs.group(2) else f"--{needs.group(1)}"
            return f"{where}: {flag} needs a value. Fix: give it one, e.g. {flag.split('/')[0]} VALUE ({helps})"
        unknown = re.fullmatch(r"No idea what '(.*)' is!", text)
        if unknown:
            word = unknown.group(1)
            if not word.startswith("-"):
                return f"pitunnel: no task named {word!r}. Fix: pitunnel --list shows the tasks"
            owners = [str(c.name) for c in contexts(self.collection) if word.split("=")[0] in c.flags]
            if task:
                return (f"{where}: no flag {word}" + (f" (only {', '.join(owners)} take it)" if owners else "")
                        + f". Fix: {helps} lists its flags")
            if owners:
                return f"pitunnel: {word} goes with a task. Fix: pitunnel TASK {word} ... ({', '.join(owners)} take it)"
            return f"pitunnel: no flag {word}. Fix: pitunnel --help lists the tasks, pitunnel --help TASK their flags"
        return f"{where}: {text.rstrip('!')}. Fix: {helps}"


def _counted(spec: str, counted: list[tuple[str, ...]]) -> str:
    """`-v INT, --verbose=INT` as `-v, -vv, --verbose` for a flag counted by repeating it."""
    for names in counted:
        long, short = names[0], next((n for n in names if len(n) == 1), "")
        if spec == f"-{short} INT, --{long}=INT" or spec == f"--{long}=INT":
            return f"-{short}, -{short * 2}, --{long}" if short else f"--{long}"
    return spec


def not_a_number(argv: list[str]) -> str:
    """The line for a number flag given something else (--forks x)."""
    for i, flag in enumerate(argv):
        if flag in ("-f", "--forks") or flag.startswith("--forks="):
            value = flag.partition("=")[2] or " ".join(argv[i + 1:i + 2])
            return f"--forks {value!r} is not a number. Fix: --forks N, N hosts at a time (default 32)"
    return "a flag that takes a number was given something else. Fix: pitunnel --help TASK says what each takes"


def contexts(ns: Collection) -> list[ParserContext]:
    """The parser contexts of the tasks, from a copy: Invoke uses up a task's `help` when it builds them."""
    return copy.deepcopy(ns).to_contexts()


def flags_after_task(args: list[str], ns: Collection) -> list[str]:
    """`-i FILE -l pi1 verify` as `verify -i FILE -l pi1`: the task flags given before the first task name
    moved after it (the top level's own --help/--list/--version stay in front). Anything else is left as it
    is, for the parser to judge."""
    known = contexts(ns)
    value = {flag: any(flag in c.flags and c.flags[flag].takes_value and not c.flags[flag].optional for c in known)
             for flag in {f for a in args if a.startswith("-") for f in (a.split("=", 1)[0], *(f"-{x}" for x in a[1:]))}
             if any(flag in c.flags for c in known)}  # each task flag given: does it take a value?
    front: list[str] = []
    moved: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("-") or token == "-":  # the task (an unknown one is the parser's to name)
            return [*front, token, *moved, *args[i + 1:]]
        if token == "--":
            break
        flag = token.split("=", 1)[0]
        if flag in ("-h", "--help"):  # its optional value (a task name) stays with it
            front.append(token)
        elif flag in ("--list", "-V", "--version", "--print-completion-script", "--complete"):
            front.extend(args[i:i + 2] if flag == "--print-completion-script" and "=" not in token else [token])
            i += 1 if flag == "--print-completion-script" and "=" not in token else 0
        elif flag in value or (len(flag) > 2 and not flag.startswith("--") and flag[:2] in value):
            if flag not in value:  # -avi FILE: letters, the last of which may take a value; -iFILE: a value attached
                takes = not value.get(flag[:2], False) and value.get(f"-{flag[-1]}", False)
            else:
                takes = value[flag] and "=" not in token
            moved.extend(args[i:i + 2] if takes else [token])
            i += 1 if takes else 0
        else:
            break
        i += 1
    return [*front, *moved, *args[i:]]


program = PitunnelProgram(namespace=namespace(), name="pitunnel", binary="pitunnel", version=_version())


def main() -> None:
    try:
        program.run()
        sys.stdout.flush()
    except BrokenPipeError:
        closed_pipe()


def closed_pipe() -> None:
    """stdout's reader went away (`pitunnel status | head -1`): end quietly, as `ls | head` does. Python's advice
    (the signal module's note on SIGPIPE): point stdout at /dev/null so the flush at exit raises nothing; exit
    with a shell's code for a process ended by SIGPIPE (128 + 13)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(failures.CLOSED_PIPE)
