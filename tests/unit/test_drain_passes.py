"""How Remote.run reads a command's output (pitunnel/remote.py `_drain`), pass by pass (test_drain.py has the
streams' contents): on a channel whose EOF flag is up as soon as the last output arrives (as paramiko's is, with
that output still unread), both streams are read whole; each whole line is echoed (-v) on the pass it is read,
not later; and the reader waits on the channel only after a pass that found nothing (never a busy loop, never a
wait while output is pending). select is recorded, never really waited on."""

from __future__ import annotations

import operator
from collections.abc import Iterator

import pytest

from pitunnel import remote as remote_module


class ScriptedChannel:
    """Output arrives a step at a time: each pass of the reader's loop (its exit_status_ready() call) brings the
    next step's stdout and stderr; the last step comes with the exit status and EOF, as a host's last output may.
    A reader that goes on passing long after that fails the test. recv takes a byte count, as paramiko's."""

    def __init__(self, steps: list[tuple[bytes, bytes]]) -> None:
        self.steps, self.total = list(steps), len(steps)
        self.out, self.err = bytearray(), bytearray()
        self.passes = 0
        self.eof_received = self.closed = self.status = False

    def recv_ready(self) -> bool:
        return bool(self.out)

    def recv_stderr_ready(self) -> bool:
        return bool(self.err)

    def recv(self, nbytes: int) -> bytes:
        count = operator.index(nbytes)
        data = bytes(self.out[:count])
        del self.out[:count]
        return data

    def recv_stderr(self, nbytes: int) -> bytes:
        count = operator.index(nbytes)
        data = bytes(self.err[:count])
        del self.err[:count]
        return data

    def exit_status_ready(self) -> bool:
        self.passes += 1
        if self.passes > self.total + 5:
            raise AssertionError("the reader never stopped after the command ended")
        if self.steps:
            out, err = self.steps.pop(0)
            self.out += out
            self.err += err
            if not self.steps:
                self.status = self.eof_received = True
        return self.status


STEPS = [(b"one\n", b""), (b"", b""), (b"", b"warn\n"), (b"tw", b""), (b"o\nlast", b"")]


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The passes after which the reader waited on the channel (select), instead of really waiting."""
    passes: list[int] = []

    def select(readable: list[ScriptedChannel], *_: object) -> tuple[list[object], list[object], list[object]]:
        passes.append(readable[0].passes)
        return [], [], []

    monkeypatch.setattr(remote_module.select, "select", select)
    yield passes


def test_both_streams_are_read_whole_even_what_arrives_with_the_exit_status(waits: list[int]) -> None:
    chan = ScriptedChannel(STEPS)
    assert remote_module._drain(chan) == ("one\ntwo\nlast", "warn\n")  # type: ignore[arg-type]


def test_each_line_is_echoed_as_soon_as_it_is_whole_and_a_last_one_without_newline_at_the_end(
        waits: list[int]) -> None:
    chan = ScriptedChannel(STEPS)
    echoed: list[tuple[int, str]] = []
    remote_module._drain(chan, lambda line: echoed.append((chan.passes, line)))  # type: ignore[arg-type]
    assert echoed == [(1, "one"), (3, "warn"), (5, "two"), (6, "last")]  # read on the pass after each arrived


def test_the_reader_waits_on_the_channel_only_after_a_pass_that_found_nothing(waits: list[int]) -> None:
    """Waiting while output is pending would slow every run (half a second a time); never waiting would spin a
    core while a command is quiet."""
    remote_module._drain(ScriptedChannel(STEPS), lambda line: None)  # type: ignore[arg-type]
    assert waits == [1, 3]  # the passes that read nothing: the first, and the one after the empty step
    waits.clear()
    remote_module._drain(ScriptedChannel(STEPS))  # type: ignore[arg-type]
    assert waits == [1, 3]
