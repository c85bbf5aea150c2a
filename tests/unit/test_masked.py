"""What -v shows of a fact read (pitunnel/facts.py `masked`): a secret section's lines left out, counted
exactly, section by section; and the recap's count of sessions ended, added up over a run."""

from __future__ import annotations

import io

from pitunnel import facts
from pitunnel.report import Reporter


def shown(secret: set[int], output: str) -> list[str]:
    show = facts.masked(secret)
    return [line for line in (show(each) for each in output.splitlines()) if line is not None]


def test_a_secret_section_is_held_back_and_counted_to_the_byte() -> None:
    output = ("@@FACT 0\nplain\n@@RC 0\n"
              "@@FACT 1\nc2VjcmV0\nline two\n@@RC 0\n"  # 9 + 9 bytes with their newlines
              "@@FACT 2\nafter\n@@RC 0\n"
              "@@FACT 1\nx\n@@RC 1\n")  # the same section again: counted from zero
    assert shown({1}, output) == [
        "@@FACT 0", "plain", "@@RC 0",
        "@@FACT 1", f"@@RC 0 {facts.SECRET_HIDDEN.format(18)}",
        "@@FACT 2", "after", "@@RC 0",
        "@@FACT 1", f"@@RC 1 {facts.SECRET_HIDDEN.format(2)}"]


def test_output_before_any_section_and_after_a_secret_one_ends_is_shown() -> None:
    assert shown({0}, "hello\n@@FACT 0\nhidden\n@@RC 0\nafter\n") == [
        "hello", "@@FACT 0", f"@@RC 0 {facts.SECRET_HIDDEN.format(7)}", "after"]
    assert shown(set(), "@@FACT 0\nvisible\n@@RC 0\n") == ["@@FACT 0", "visible", "@@RC 0"]


def test_sessions_ended_add_up_over_a_run() -> None:
    reporter = Reporter(colour=False, out=io.StringIO())
    reporter.ended("vps", 2)
    reporter.ended("vps", 3)
    assert reporter.recap("vps").sessions_ended == 5
