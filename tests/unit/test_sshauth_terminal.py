"""Whether a passphrase can be asked for (pitunnel.sshauth `has_terminal`): a controlling terminal, else stdin
being one; never a prompt that would hang a run with no one to answer it."""

from __future__ import annotations

import io
import os
import sys

import pytest

from pitunnel import sshauth


class Stdin(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def no_tty(path: str, flags: int) -> int:
    raise OSError(6, "No such device or address")


def test_a_controlling_terminal_is_enough_and_is_opened_without_becoming_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[str, int]] = []
    closed: list[int] = []
    monkeypatch.setattr(os, "open", lambda path, flags: opened.append((path, flags)) or 99)
    monkeypatch.setattr(os, "close", closed.append)
    monkeypatch.setattr(sys, "stdin", Stdin(False))
    assert sshauth.has_terminal() is True
    assert opened == [("/dev/tty", os.O_RDWR | os.O_NOCTTY)] and closed == [99]


@pytest.mark.parametrize(("stdin", "answer"), [(Stdin(True), True), (Stdin(False), False), (None, False)])
def test_without_one_stdin_decides(monkeypatch: pytest.MonkeyPatch, stdin: Stdin | None, answer: bool) -> None:
    monkeypatch.setattr(os, "open", no_tty)
    monkeypatch.setattr(sys, "stdin", stdin)
    assert sshauth.has_terminal() is answer
