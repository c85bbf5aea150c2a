"""What a run looks like on a terminal: the recap paints each host by how it ended, warnings stand out
the same way on their line and again under the recap; and the inventory's problem lines, word for word."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitunnel.inventory.errors import InventoryError, Problem, clip, dotted, show
from pitunnel.report import Reporter

GREEN, YELLOW, RED, MAGENTA, RESET = "\033[32m", "\033[33m", "\033[31m", "\033[1;35m", "\033[0m"


def test_the_recap_paints_each_host_by_how_it_ended(capsys: pytest.CaptureFixture[str]) -> None:
    r = Reporter(colour=True)
    r.line("calm", "ok", "x")
    r.line("busy", "changed", "x")
    r.line("down", "unreachable", "connect")
    r.line("bad", "changed", "x")
    r.line("bad", "failed", "y")
    r.warn("busy", "passwords on")
    capsys.readouterr()
    r.print_recap()
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["", "PLAY RECAP " + "*" * 60]
    painted = {line.split()[0]: line for line in out[2:6]}
    assert painted[f"{GREEN}calm"].startswith(f"{GREEN}{'calm':<26}{RESET} : ok=1")
    assert painted[f"{YELLOW}busy"].startswith(f"{YELLOW}{'busy':<26}{RESET} : ok=0    changed=1")
    assert painted[f"{RED}down"].startswith(f"{RED}{'down':<26}{RESET}")
    assert painted[f"{RED}bad"].startswith(f"{RED}{'bad':<26}{RESET}")  # failed wins over changed
    assert out[6] == f"{MAGENTA}WARNING{RESET} busy: passwords on"


def test_a_warning_line_stands_out_and_a_note_is_plain(capsys: pytest.CaptureFixture[str]) -> None:
    r = Reporter(colour=True)
    r.warn("pi1", "check this")
    r.note("pi1", "by the way")
    assert capsys.readouterr().out.splitlines() == [f"{MAGENTA}{'WARNING':<12}{RESET} {'pi1':<10} check this",
                                                    f"{'':<12} {'pi1':<10} by the way"]


def test_a_problem_line_names_file_line_column_and_key(tmp_path: Path) -> None:
    f = tmp_path / "hosts.yml"
    assert str(Problem(f, 3, 7, "vps.main.port", "99999 is out of range", "use a port from 1 to 65535")) == \
        f"{f}:3:7: vps.main.port: 99999 is out of range. Fix: use a port from 1 to 65535."
    assert str(Problem(f, 3, None, "", "odd?", "do this!")) == f"{f}:3: odd? Fix: do this!"
    assert str(Problem(f, None, None, "pis", "ends.", "fix.")) == f"{f}: pis: ends. Fix: fix."
    one = InventoryError(f, [Problem(f, 1, 1, "", "a", "b")])
    assert str(one).splitlines()[0] == f"{f}: 1 problem found:" and one.file == f and len(one.problems) == 1
    assert str(InventoryError(f, [Problem(f, 1, 1, "", "a", "b")] * 2)).splitlines()[0] == f"{f}: 2 problems found:"
    assert one.args == (f, one.problems)


def test_values_in_messages_are_short_and_say_their_type() -> None:
    assert show(True) == "true (a boolean)" and show(False) == "false (a boolean)"
    assert show("x") == "'x' (a string)" and show(2.5) == "2.5 (a number)"
    assert show([1]) == "a list" and show({"a": 1}) == "a mapping" and show(None) == "None"
    assert clip("x" * 60) == "x" * 60 and clip("x" * 61) == "x" * 60 + "... (61 characters)"
    assert dotted(("pis", "pi1", "tunnels", 0, "port")) == "pis.pi1.tunnels[0].port"
    assert dotted(("k" * 41,)) == "k" * 40 + "... (41 characters)"


def test_a_problem_is_placed_at_the_value_or_at_its_key(tmp_path: Path) -> None:
    from pitunnel import yamlsrc
    from pitunnel.inventory.errors import Problems
    report = Problems(tmp_path / "h.yml", yamlsrc.load("vps:\n  main:\n    port: 99999\n"))
    report.problem(("vps", "main", "port"), "bad", "fix")  # the value, on its key's line
    report.problem(("vps", "main", "port"), "bad key", "fix", at_key=True)
    report.problem(("vps", "main", "user"), "missing", "add it")  # not written: its mapping's key
    report.problem(("vps", "main", "user"), "missing", "add it", at_key=True)
    assert [(p.line, p.column) for p in report.problems] == [(3, 11), (3, 5), (2, 3), (2, 3)]
    assert [p.key for p in report.problems] == ["vps.main.port", "vps.main.port", "vps.main.user", "vps.main.user"]
    assert report.line(("vps", "main", "port")) == " (line 3)"
    assert Problems(tmp_path / "e.yml", yamlsrc.load("")).line(("vps",)) == ""
