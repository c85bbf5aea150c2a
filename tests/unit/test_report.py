"""Unit tests for pitunnel.report: counting, the lines and the recap as printed (colour off)."""

from __future__ import annotations

import re
import threading

import pytest

from pitunnel.report import Recap, Reporter


def test_counts_per_host_and_status() -> None:
    r = Reporter(colour=False)
    r.line("vps", "ok", "a")
    r.line("vps", "ok", "b")
    r.line("vps", "changed", "c")
    r.line("vps", "would change", "d")
    r.line("pi1", "failed", "e")
    r.line("pi1", "skipped", "f")
    r.line("pi2", "unreachable", "connect")
    assert r.recaps["vps"] == Recap(ok=2, changed=2)
    assert r.recaps["pi1"] == Recap(failed=1, skipped=1)
    assert r.recaps["pi2"] == Recap(unreachable=1)
    assert list(r.recaps) == ["vps", "pi1", "pi2"]  # order of first appearance


def test_quiet_still_counts_but_hides_ok(capsys: pytest.CaptureFixture[str]) -> None:
    r = Reporter(colour=False, quiet=True)
    r.line("h", "ok", "hidden op")
    r.line("h", "changed", "shown op", "why")
    r.note("h", "a note")
    out = capsys.readouterr().out
    assert "hidden op" not in out and "a note" not in out
    assert "shown op - why" in out
    assert r.recaps["h"] == Recap(ok=1, changed=1)


def test_line_format_and_diff(capsys: pytest.CaptureFixture[str]) -> None:
    r = Reporter(colour=False, show_diff=True)
    r.line("pi1", "changed", "file /etc/x", "content", "--- a\n+++ b\n")
    r.line("pi1", "ok", "file /etc/y")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{'changed':<12} {'pi1':<10} file /etc/x - content"
    assert out[1:3] == ["--- a", "+++ b"]
    assert out[3] == f"{'ok':<12} {'pi1':<10} file /etc/y"
    assert "\033[" not in "\n".join(out)


def test_diff_hidden_unless_asked(capsys: pytest.CaptureFixture[str]) -> None:
    r = Reporter(colour=False)
    r.line("pi1", "changed", "file /etc/x", "content", "--- a\n+++ b\n")
    assert "+++ b" not in capsys.readouterr().out


def test_colour_on_paints_status(capsys: pytest.CaptureFixture[str]) -> None:
    r = Reporter(colour=True)
    r.line("pi1", "failed", "x")
    assert "\033[31m" in capsys.readouterr().out


def recap_lines(out: str) -> dict[str, str]:
    lines = out.split("PLAY RECAP", 1)[1].splitlines()[1:]
    return {line.split()[0]: line for line in lines if line.strip()}


def test_recap_line_format(capsys: pytest.CaptureFixture[str]) -> None:
    r = Reporter(colour=False)
    for _ in range(3):
        r.line("vps", "ok", "x")
    r.line("vps", "changed", "y")
    r.line("pi1", "failed", "z")
    r.line("pi1", "skipped", "w")
    r.line("pi1", "skipped", "v")
    r.recap("pi2").unreachable += 1
    r.recap("vps").round_trips = 4
    capsys.readouterr()
    r.print_recap()
    out = capsys.readouterr().out
    assert out.startswith("\nPLAY RECAP *")
    lines = recap_lines(out)
    assert set(lines) == {"vps", "pi1", "pi2"}
    pattern = r"^{host}\s+ : ok={ok}\s+changed={changed}\s+unreachable={u}\s+failed={f}\s+skipped={s}\b"
    assert re.match(pattern.format(host="vps", ok=3, changed=1, u=0, f=0, s=0), lines["vps"])
    assert re.match(pattern.format(host="pi1", ok=0, changed=0, u=0, f=1, s=2), lines["pi1"])
    assert re.match(pattern.format(host="pi2", ok=0, changed=0, u=1, f=0, s=0), lines["pi2"])
    # the exact prefix as printed: host padded to 26, each count padded to 4 (Ansible's layout)
    assert lines["vps"].startswith(f"{'vps':<26} : ok=3    changed=1    unreachable=0    failed=0    skipped=0    ")
    assert lines["vps"].endswith("round_trips=4")
    squeezed = re.sub(r"\s+", " ", lines["pi1"])
    assert squeezed.startswith("pi1 : ok=0 changed=0 unreachable=0 failed=1 skipped=2")
    assert "\033[" not in out


def test_failed_hosts() -> None:
    r = Reporter(colour=False)
    r.line("good", "ok", "a")
    r.line("good", "changed", "b")
    r.line("bad", "ok", "a")
    r.line("bad", "failed", "b")
    r.line("gone", "unreachable", "connect")
    r.line("skippy", "skipped", "tunnel")
    assert r.failed_hosts == ["bad", "gone"]
    assert Recap(failed=1).bad and Recap(unreachable=1).bad
    assert not Recap(ok=5, changed=3, skipped=2).bad
    assert Reporter(colour=False).failed_hosts == []


def test_counting_is_thread_safe() -> None:
    r = Reporter(colour=False, quiet=True)

    def work() -> None:
        for _ in range(500):
            r.line("h", "ok", "x")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert r.recaps["h"].ok == 4000


def test_a_warning_is_printed_even_when_quiet_and_again_under_the_recap(capsys: pytest.CaptureFixture[str]) -> None:
    r = Reporter(colour=False, quiet=True)
    r.line("pi1", "ok", "hidden op")
    r.warn("pi1", "sshd is public and accepts passwords")
    r.print_recap()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{'WARNING':<12} {'pi1':<10} sshd is public and accepts passwords"
    assert out[-1] == "WARNING pi1: sshd is public and accepts passwords"  # the last thing the operator reads
    assert r.recaps["pi1"] == Recap(ok=1)  # a warning is not a failure
