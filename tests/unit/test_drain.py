"""Reading a command's stdout and stderr to its end (pitunnel.remote `_drain`) from a scripted channel: each
look at the channel brings the next chunk, so the tests say exactly what arrives when. The channel's fileno
is a pipe nobody writes: the wait between looks is select's own timeout."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pitunnel.remote import _drain


class Scripted:
    """A paramiko Channel as _drain uses it: `ticks` are (stdout, stderr) chunks, one arriving each time it
    is asked whether the command has exited; it has exited once the last has arrived; its end of stream is
    seen `eof_after` looks later."""

    def __init__(self, ticks: list[tuple[bytes, bytes]], eof_after: int = 0) -> None:
        self.ticks, self.eof_after = list(ticks), eof_after
        self.out = self.err = b""
        self.closed = False
        self.looks = 0
        self._read, self._write = os.pipe()
        self._arrive()

    def _arrive(self) -> None:
        if self.ticks:
            out, err = self.ticks.pop(0)
            self.out, self.err = self.out + out, self.err + err

    def recv_ready(self) -> bool:
        return bool(self.out)

    def recv_stderr_ready(self) -> bool:
        return bool(self.err)

    def recv(self, size: int) -> bytes:
        data, self.out = self.out[:size], self.out[size:]
        return data

    def recv_stderr(self, size: int) -> bytes:
        data, self.err = self.err[:size], self.err[size:]
        return data

    def exit_status_ready(self) -> bool:
        self.looks += 1
        self._arrive()
        return not self.ticks

    @property
    def eof_received(self) -> bool:
        if self.ticks or self.out or self.err:
            return False
        if self.eof_after:
            self.eof_after -= 1
            return False
        return True

    def fileno(self) -> int:
        return self._read

    def close_pipe(self) -> None:
        os.close(self._read)
        os.close(self._write)


@pytest.fixture()
def chans() -> Iterator[list[Scripted]]:
    made: list[Scripted] = []
    yield made
    for chan in made:
        chan.close_pipe()


def scripted(chans: list[Scripted], ticks: list[tuple[bytes, bytes]], eof_after: int = 0) -> Scripted:
    chans.append(Scripted(ticks, eof_after))
    return chans[-1]


def test_whole_lines_are_echoed_as_they_arrive_and_a_last_line_without_newline_at_the_end(
        chans: list[Scripted]) -> None:
    seen: list[str] = []
    chan = scripted(chans, [(b"one\ntw", b""), (b"o\nthree\n", b"warn"), (b"", b"ing\n"), (b"tail", b"")])
    out, err = _drain(chan, seen.append)  # type: ignore[arg-type]
    assert (out, err) == ("one\ntwo\nthree\ntail", "warning\n")
    assert seen == ["one", "two", "three", "warning", "tail"]


def test_bytes_that_are_not_utf8_become_replacement_characters_in_both_streams(chans: list[Scripted]) -> None:
    seen: list[str] = []
    out, err = _drain(scripted(chans, [(b"caf\xe9\n", b"\xff!\n")]), seen.append)  # type: ignore[arg-type]
    assert (out, err) == ("caf\ufffd\n", "\ufffd!\n") and seen == ["caf\ufffd", "\ufffd!"]
    seen.clear()  # and in a last line without its newline, echoed at the end
    out, err = _drain(scripted(chans, [(b"ok\nend\xfe", b"\xfd")]), seen.append)  # type: ignore[arg-type]
    assert (out, err) == ("ok\nend\ufffd", "\ufffd") and seen == ["ok", "end\ufffd", "\ufffd"]


@pytest.mark.parametrize("last", [(b"late out\n", b""), (b"", b"late err\n"), (b"late out\n", b"late err\n")])
def test_output_that_arrives_with_the_exit_is_read_before_the_end(chans: list[Scripted],
                                                                  last: tuple[bytes, bytes]) -> None:
    out, err = _drain(scripted(chans, [(b"first\n", b""), last]))  # type: ignore[arg-type]
    assert out == "first\n" + last[0].decode() and err == last[1].decode()


def test_an_exit_is_final_only_once_the_end_of_stream_is_seen(chans: list[Scripted]) -> None:
    chan = scripted(chans, [(b"a\n", b"")], eof_after=2)
    assert _drain(chan) == ("a\n", "")  # type: ignore[arg-type]
    assert chan.looks >= 3  # it kept looking until the end of stream came


def test_a_closed_channel_ends_it_without_an_end_of_stream(chans: list[Scripted]) -> None:
    chan = scripted(chans, [(b"a\n", b"")], eof_after=10**6)
    chan.closed = True
    assert _drain(chan) == ("a\n", "")  # type: ignore[arg-type]


def test_more_than_one_read_of_output_is_joined_whole(chans: list[Scripted]) -> None:
    big = bytes(range(48, 58)) * 20000  # 200,000 bytes: several reads of 64 KiB
    assert _drain(scripted(chans, [(big, big[:70000])])) == (big.decode(), big[:70000].decode())  # type: ignore[arg-type]
