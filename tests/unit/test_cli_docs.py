"""docs/cli.md's tables against the tool (issue 24): the tasks, each flag with its letter and the tasks that take
it, and the exit codes, compared with the parsed `pitunnel --list` and `pitunnel --help TASK` of every task and
with pitunnel.failures, so the page cannot drift from the command again."""

from __future__ import annotations

import re
from pathlib import Path

from pitunnel import failures, tasks
from tests.unit.test_cli_program import run

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def table(heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table under `## heading` in cli.md, header and rule left out."""
    section = CLI_MD.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[2:]]


def listed_tasks() -> list[str]:
    code, out, _ = run("--list")
    assert code == 0
    return re.findall(r"^  ([a-z][a-z-]+) ", out, re.M)


def help_flags(task: str) -> dict[str, str]:
    """`pitunnel --help TASK` parsed: each long flag and its short letter ("" if none)."""
    code, out, _ = run("--help", task)
    assert code == 0, task
    return {long: short or "" for short, long in re.findall(r"^  (?:-(\w)(?: \w+)?, )?(?:-\w\w, )?--([a-z][\w-]*)", out, re.M)}


def test_the_task_table_names_every_task_and_no_other() -> None:
    documented = [re.match(r"`([a-z-]+)", row[0]).group(1) for row in table("Tasks")]  # type: ignore[union-attr]
    assert sorted(documented) == sorted(listed_tasks()) == sorted(t.name.replace("_", "-") for t in tasks.TASKS)
    first = CLI_MD.read_text().split("\n## ", 1)[0]
    words = {10: "ten", 11: "eleven", 12: "twelve", 9: "nine", 13: "thirteen", 14: "fourteen"}
    assert f"one command with {words[len(documented)]} tasks" in first


def test_the_flag_table_gives_each_flag_its_letter_and_exactly_the_tasks_that_take_it() -> None:
    every = listed_tasks()
    actual = {task: help_flags(task) for task in every}
    documented: dict[str, set[str]] = {task: set() for task in every}
    for row in table("Flags"):
        names = [n.split()[0] for n in re.findall(r"`(-[^`]+)`", row[0])]
        longs = [n[2:] for n in names if n.startswith("--")]
        short = next((n[1:] for n in names if re.fullmatch(r"-\w", n)), "")
        spec = row[1]
        if spec == "all":
            takers = set(every)
        elif spec.startswith("all but "):
            takers = set(every) - set(spec.removeprefix("all but ").split(", "))
        else:
            takers = set(spec.split(", "))
        assert takers <= set(every), row
        for task in every:
            for long in longs:
                if task in takers:
                    assert long in actual[task], f"cli.md says {task} takes --{long}; its --help has no such flag"
                    assert actual[task][long] == short, f"{task} --{long}: -{actual[task][long]} in --help, -{short} in cli.md"
                    documented[task].add(long)
                else:
                    assert long not in actual[task], f"{task} takes --{long}, cli.md says it does not"
    for task in every:
        own = {f for f in actual[task] if f != "help"} - {"pi"}  # revoke's PI is positional (documented as `PI`)
        assert own == documented[task], f"{task}: flags in --help but not in cli.md: {own - documented[task]}"


def test_the_exit_code_table_is_the_codes_a_run_can_end_with() -> None:
    documented = {int(row[0]) for row in table("Exit codes")}
    assert documented == {failures.OK, failures.FAILED, failures.USAGE, failures.UNREACHABLE,
                          failures.exit_code(failed=True, unreachable=True), failures.INTERRUPTED,
                          failures.CLOSED_PIPE}
    code, _, _ = run("deploy")  # an unknown task: the command line is wrong, nothing touched
    assert code == failures.USAGE
