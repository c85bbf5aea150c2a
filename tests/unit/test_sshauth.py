"""pitunnel.sshauth alone: whether a passphrase can be asked for (`has_terminal`: a controlling terminal, else stdin
being one; never a prompt that would hang a run), and what a refused login says it tried."""

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


def test_what_a_refused_login_tried_is_said_in_a_few_words() -> None:
    from pathlib import Path

    import paramiko
    from paramiko.auth_strategy import AuthFailure, InMemoryPrivateKey, Password, SourceResult

    from pitunnel.sshconf import Identity

    def failure(*sources: object) -> AuthFailure:
        return AuthFailure([SourceResult(s, paramiko.AuthenticationException("no")) for s in sources])  # type: ignore[arg-type]

    key = paramiko.ECDSAKey.generate()
    agent1, agent2 = InMemoryPrivateKey("pi", key), InMemoryPrivateKey("pi", key)
    ring = sshauth.KeyRing(terminal=lambda: False)
    first = sshauth.FileKey("pi", Identity(Path("/home/me/.ssh/id_ed25519"), "inventory"), ring)
    second = sshauth.FileKey("pi", Identity(Path("/home/me/.ssh/id_rsa"), "default"), ring)
    password = Password("pi", lambda: "pw")
    assert sshauth.tried(failure()) == "nothing: no agent key, no key file, no password"
    assert sshauth.tried(failure(agent1)) == "ssh-agent (1 key)"
    assert sshauth.tried(failure(agent1, agent2, first, second, password)) == \
        "ssh-agent (2 keys), /home/me/.ssh/id_ed25519, /home/me/.ssh/id_rsa, password"
    assert sshauth.tried(failure(first)) == "/home/me/.ssh/id_ed25519"
