"""Every kind of command-line mistake, as the whole line `pitunnel` prints (pitunnel.console: `usage`,
`not_a_number`), the version when pitunnel is not installed, and the quiet end when stdout's reader goes away.
test_cli_program.py checks that each mistake exits 3 before any host; here each line is checked to its end."""

from __future__ import annotations

import os
import re
import sys
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest

from pitunnel import console, failures
from tests.unit.test_cli_program import run


@pytest.mark.parametrize("args, line", [
    (("verify", "-i"), "pitunnel verify: -i/--inventory needs a value. Fix: give it one, e.g. -i VALUE "
                       "(pitunnel --help verify)"),
    (("verify", "--limit"), "pitunnel verify: -l/--limit needs a value. Fix: give it one, e.g. -l VALUE "
                            "(pitunnel --help verify)"),
    (("migrate", "--to"), "pitunnel migrate: --to needs a value. Fix: give it one, e.g. --to VALUE "
                          "(pitunnel --help migrate)"),  # no short flag
    (("status", "--forks"), "pitunnel status: -f/--forks needs a value. Fix: give it one, e.g. -f VALUE "
                            "(pitunnel --help status)"),  # a number flag: Invoke names its kind too
    (("status", "--forks", "many"), "pitunnel: --forks 'many' is not a number. Fix: --forks N, N hosts at a time "
                                    "(default 32)"),
    (("status", "--forks=many"), "pitunnel: --forks 'many' is not a number. Fix: --forks N, N hosts at a time "
                                 "(default 32)"),
    (("status", "-f", "x"), "pitunnel: --forks 'x' is not a number. Fix: --forks N, N hosts at a time (default 32)"),
    (("verify", "--nosuch"), "pitunnel verify: no flag --nosuch. Fix: pitunnel --help verify lists its flags"),
    (("verify", "-vx"), "pitunnel verify: no flag -x. Fix: pitunnel --help verify lists its flags"),
    (("--echo", "verify"), "pitunnel: no flag --echo. Fix: pitunnel --help lists the tasks, pitunnel --help TASK "
                           "their flags"),
    (("deploy",), "pitunnel: no task named 'deploy'. Fix: pitunnel --list shows the tasks"),
    (("revoke",), "pitunnel revoke: 'revoke' did not receive required positional arguments: 'pi'. "
                  "Fix: pitunnel --help revoke"),
])
def test_each_mistake_is_this_whole_line(args: tuple[str, ...], line: str) -> None:
    code, out, err = run(*args)
    assert (code, out, err) == (failures.USAGE, "", line + "\n")


def owners(err: str, pattern: str) -> set[str]:
    found = re.fullmatch(pattern, err)
    assert found, err
    return set(found.group(1).split(", "))


def test_a_flag_of_other_tasks_names_them_all_and_none_that_lacks_it() -> None:
    _, _, err = run("verify", "-c")
    took = owners(err, r"pitunnel verify: no flag -c \(only (.*) take it\)\. Fix: pitunnel --help verify lists its "
                       r"flags\n")
    assert {"provision-vps", "provision-pi", "provision", "teardown", "migrate", "revoke"} <= took
    assert not {"verify", "status", "init"} & took


def test_a_task_flag_before_any_task_names_the_tasks_that_take_it() -> None:
    _, _, err = run("-i", "h.yml")
    took = owners(err, r"pitunnel: -i goes with a task\. Fix: pitunnel TASK -i \.\.\. \((.*) take it\)\n")
    assert {"init", "provision", "verify", "status", "teardown", "revoke"} <= took
    _, _, err = run("--check")
    took = owners(err, r"pitunnel: --check goes with a task\. Fix: pitunnel TASK --check \.\.\. \((.*) take it\)\n")
    assert "provision" in took and not {"verify", "status", "init"} & took


def test_not_a_number_names_forks_only_when_forks_was_given() -> None:
    assert console.not_a_number(["pitunnel", "status", "--forks"]) == \
        "--forks '' is not a number. Fix: --forks N, N hosts at a time (default 32)"
    assert console.not_a_number(["pitunnel", "status", "--verbose", "x"]) == \
        "a flag that takes a number was given something else. Fix: pitunnel --help TASK says what each takes"
    assert console.not_a_number(["pitunnel", "-f", "9x", "status"]) == \
        "--forks '9x' is not a number. Fix: --forks N, N hosts at a time (default 32)"


def test_the_version_of_a_pitunnel_not_installed_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    assert console._version() not in ("", "unknown")  # this checkout is installed (pip install -e)

    def missing(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(console, "version", missing)
    assert console._version() == "unknown"


def test_a_closed_pipe_ends_with_141_and_later_output_goes_nowhere(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "stdout"
    with target.open("w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        with pytest.raises(SystemExit) as ended:
            console.closed_pipe()
        os.write(stdout.fileno(), b"after\n")  # the flush at exit: into /dev/null now, not an error
    assert ended.value.code == failures.CLOSED_PIPE == 141
    assert target.read_text() == ""
