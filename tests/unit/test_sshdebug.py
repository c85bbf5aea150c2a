"""`-vv`'s filter of paramiko's DEBUG lines (pitunnel.sshdebug), line by line: what is shown, under which host,
and that every secret is masked. The end-to-end case (a real login against a fake sshd) is in
test_cli_program.py."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator

import pytest

from pitunnel import sshdebug


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    """No secret, handler or thread host left over from another test, and none left behind."""
    sshdebug.disable()
    sshdebug._secrets.clear()
    sshdebug.CURRENT.__dict__.pop("host", None)
    yield
    sshdebug.disable()
    sshdebug._secrets.clear()
    sshdebug.CURRENT.__dict__.pop("host", None)


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("paramiko.transport", logging.DEBUG, __file__, 1, message, args, None)


def shown(handler: sshdebug.Handshake, message: str, *args: object) -> str:
    out = io.StringIO()
    handler.out = lambda: out
    handler.emit(record(message, *args))
    return out.getvalue()


# ---------------------------------------------------------------------------------------------------- masking


def test_a_secret_is_masked_wherever_it_appears_and_bytes_count_too() -> None:
    sshdebug.secret("hunter2")
    sshdebug.secret(b"s3cret-bytes")
    assert sshdebug.masked("a hunter2 b hunter2") == f"a {sshdebug.MASK} b {sshdebug.MASK}"
    assert sshdebug.masked("pw=s3cret-bytes") == f"pw={sshdebug.MASK}"


def test_an_empty_or_missing_secret_is_not_remembered() -> None:
    sshdebug.secret("")
    sshdebug.secret(b"")
    sshdebug.secret(None)
    assert sshdebug._secrets == set()
    assert sshdebug.masked("nothing to hide") == "nothing to hide"


def test_the_longest_secret_is_masked_first_so_no_part_of_it_shows() -> None:
    sshdebug.secret("zz")
    sshdebug.secret("azzz")  # contains the first (and sorts before it): masking "zz" first would leave "a" showing
    assert sshdebug.masked("x azzz y zz") == f"x {sshdebug.MASK} y {sshdebug.MASK}"


def test_a_pem_block_is_replaced_whole_also_when_it_is_cut_off() -> None:
    block = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\nNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----"
    assert sshdebug.masked(f"key {block} after") == f"key (key material: {sshdebug.MASK}) after"
    assert sshdebug.masked("cut -----BEGIN RSA PRIVATE KEY-----\nMIIE\nrest") == \
        f"cut (key material: {sshdebug.MASK})"


def test_a_long_base64_run_is_masked_and_a_fingerprint_is_not() -> None:
    blob = "A" * 60
    fingerprint = "SHA256:" + "b" * 43
    assert sshdebug.masked(f"k {blob}== z") == f"k {sshdebug.MASK} z"
    assert sshdebug.masked(f"k {'A' * 59} z") == f"k {'A' * 59} z"  # under 60: not taken for key material
    assert sshdebug.masked(fingerprint) == fingerprint
    assert sshdebug.masked("k " + "+/" * 30) == f"k {sshdebug.MASK}"


# ---------------------------------------------------------------------------------------------- the filter


@pytest.mark.parametrize("noise", sshdebug.NOISE)
def test_every_kind_of_noise_is_left_out(noise: str) -> None:
    handler = sshdebug.Handshake(lambda: io.StringIO(), {})
    assert shown(handler, noise + " and the rest") == ""


def test_a_shown_line_is_tagged_ssh_and_the_host_in_columns_and_masked() -> None:
    sshdebug.secret("pw123")
    sshdebug.CURRENT.host = "pi1"
    handler = sshdebug.Handshake(lambda: io.StringIO(), {})
    assert shown(handler, "Trying password %s for %s", "pw123", "pi") == \
        f"ssh          pi1        Trying password {sshdebug.MASK} for pi\n"


def test_a_record_whose_message_cannot_be_formatted_is_dropped_quietly() -> None:
    handler = sshdebug.Handshake(lambda: io.StringIO(), {})
    assert shown(handler, "two %s %s", "only one") == ""


def test_a_line_with_no_host_known_is_under_a_dash() -> None:
    handler = sshdebug.Handshake(lambda: io.StringIO(), {})
    assert shown(handler, "Kex: curve25519").split()[:2] == ["ssh", "-"]


class Transport(threading.Thread):
    """A thread with a peer, as paramiko's Transport is: its lines are about the host at that address."""

    def __init__(self, peer: object) -> None:
        super().__init__()
        self.peer = peer
        self.lines: list[str] = []

    def getpeername(self) -> tuple[str, int]:
        if isinstance(self.peer, BaseException):
            raise self.peer
        return self.peer  # type: ignore[return-value]

    def run(self) -> None:
        out = io.StringIO()
        handler = sshdebug.Handshake(lambda: out, {("198.18.0.2", 22): "vps"})
        handler.emit(record("Connected (version 2.0)"))
        self.lines = out.getvalue().split()


@pytest.mark.parametrize(("peer", "host"), [
    (("198.18.0.2", 22), "vps"),  # an inventory host, by its address and port
    (("198.18.0.2", 22, 0, 0), "vps"),  # IPv6-style tuple: the first two count
    (("198.18.0.9", 2222), "198.18.0.9:2222"),  # not in the inventory: the address itself
    (("", 0), "-"),  # no address: the worker's host, here none
    (OSError("not connected"), "-"),  # the socket is gone
])
def test_a_transport_thread_s_lines_are_under_its_peer(peer: object, host: str) -> None:
    thread = Transport(peer)
    thread.start()
    thread.join()
    assert thread.lines[:2] == ["ssh", host]


# --------------------------------------------------------------------------------------- enable and disable


def test_enable_installs_one_handler_at_debug_and_a_second_call_only_adds_hosts() -> None:
    logger = logging.getLogger("paramiko")
    out = io.StringIO()
    sshdebug.enable({("198.18.0.2", 22): "vps"}, out=lambda: out)
    sshdebug.enable({("198.18.0.3", 22): "pi1"})
    mine = [h for h in logger.handlers if isinstance(h, sshdebug.Handshake)]
    assert len(mine) == 1 and logger.level == logging.DEBUG
    assert mine[0].hosts == {("198.18.0.2", 22): "vps", ("198.18.0.3", 22): "pi1"}
    assert mine[0].out() is out  # the first call's output stays
    sshdebug.disable()
    assert not [h for h in logger.handlers if isinstance(h, sshdebug.Handshake)]
    assert logger.level == logging.NOTSET and sshdebug._installed == []


def test_enable_writes_to_stderr_unless_told_otherwise(capsys: pytest.CaptureFixture[str]) -> None:
    sshdebug.enable({})
    sshdebug.CURRENT.host = "pi2"
    logging.getLogger("paramiko.transport").debug("Authentication (publickey) successful!")
    captured = capsys.readouterr()
    assert captured.out == "" and "ssh          pi2        Authentication (publickey) successful!" in captured.err
