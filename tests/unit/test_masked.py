"""What -v shows of a fact read (pitunnel/facts.py `masked`): a secret section's lines left out, counted
exactly, section by section; a secret file read on its own shows nothing of it; and the recap's count of sessions ended, added up over a run."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from pitunnel import facts
from pitunnel.report import Reporter
from tests.unit.sshd_fake import FakeSshd
from tests.unit.test_remote import KEY, line, remote, sshd  # noqa: F401  (sshd: a fixture)


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


def test_with_v_a_secret_file_read_alone_shows_none_of_its_lines_and_another_file_shows_its_own(
        sshd: FakeSshd, tmp_path: Path) -> None:
    """`facts.read` of one secret file over a real login: its value is the file, and -v (the Remote's echo)
    shows no line of it, neither its stat line nor its bytes; a file that is not secret is shown as read."""
    secret, plain = tmp_path / "htpasswd", tmp_path / "plain.conf"
    secret.write_text("admin:$apr1$s3cret\n")
    plain.write_text("listen 80;\n")
    known = tmp_path / "known_hosts"
    known.write_text(line(sshd.port, KEY))
    host = remote(sshd.port, known)
    seen: list[str] = []
    host.echo = seen.append
    try:
        assert facts.read(host, facts.file_fact(str(secret), secret=True)).content == b"admin:$apr1$s3cret\n"
        assert seen == []
        assert facts.read(host, facts.file_fact(str(plain))).content == b"listen 80;\n"
        assert base64.b64encode(b"listen 80;\n").decode() in seen
    finally:
        host.close()
