"""The status page's generator (pitunnel/roles/vps/statusgen.py) as a user of the page sees it: each tunnel up or
down and since when, its strips, its connections per day and last error, the certificates' expiry; the history it
keeps (7 days, capped) and the run the metrics writer makes of it (history file, page, journal cursor), in-process.
The files provision-vps sends for it are checked here too (statuspage.py)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pitunnel.roles.vps import statusgen as gen
from pitunnel.roles.vps import statuspage

NOW = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC
MINUTE = int(NOW // 60)
MIDNIGHT = 1_779_926_400.0  # 2026-05-28 00:00:00 UTC


def cells(row: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)


def titles(svg: str) -> list[str]:
    return re.findall(r'fill="([^"]*)"><title>([^<]*)</title>', svg)


# ---------------------------------------------------------------------------
# the history


def test_a_tunnel_first_seen_up_is_up_since_its_session_began_and_counts_one_connection() -> None:
    began = int(NOW) - 300
    assert gen.record(None, True, began, MINUTE, NOW) == {
        "bits": "1", "end": MINUTE, "up": True, "changed": began, "session": began,
        "connects": {"2026-05-28": 1}, "error": None}
    down = gen.record(None, False, None, MINUTE, NOW)
    assert down["bits"] == "0" and down["changed"] == NOW and down["connects"] == {}
    assert gen.record(None, True, None, MINUTE, NOW)["changed"] == NOW  # up, its start unknown: seen up now


def test_readings_in_one_minute_that_agree_keep_that_minute_whole() -> None:
    up = gen.record(gen.record(None, True, 100, MINUTE, NOW), True, 100, MINUTE, NOW + 20)
    down = gen.record(gen.record(None, False, None, MINUTE, NOW), False, None, MINUTE, NOW + 20)
    assert (up["bits"], down["bits"]) == ("1", "0")


def test_a_tunnel_back_up_is_up_since_its_new_session_began() -> None:
    e = gen.record(None, False, None, MINUTE, NOW)
    e = gen.record(e, True, int(NOW) + 100, MINUTE + 3, NOW + 180)  # the session began before this reading
    assert e["up"] and e["changed"] == int(NOW) + 100 and e["bits"] == "0--1"


def test_connections_are_counted_for_today_and_the_six_days_before() -> None:
    now = MIDNIGHT + 3  # just past midnight: the days are counted by the calendar, not by 24-hour spans
    e = None
    for d in range(9, -1, -1):  # a session begun each day, 9 days ago to today, each seen at once
        e = gen.record(e, True, int(now - d * 86400), int(now // 60), now)
    assert e is not None
    assert sorted(e["connects"]) == [f"2026-05-{d}" for d in range(22, 29)] and set(e["connects"].values()) == {1}


def test_under_the_cap_no_tunnel_loses_a_minute_even_when_one_has_far_more() -> None:
    history: gen.History = {"pi1/ssh": gen.record(None, True, None, MINUTE, NOW), "pi2/web": gen.record(None, True, None, MINUTE, NOW)}
    history["pi1/ssh"]["bits"] = "1" * 500
    cap = len(json.dumps(history))  # exactly at the cap
    bounded = gen.bound(json.loads(json.dumps(history)), cap=cap)
    assert bounded["pi1/ssh"]["bits"] == "1" * 500 and bounded["pi2/web"]["bits"] == "1"


def test_a_cap_too_small_for_any_minute_keeps_none() -> None:
    history = {"pi1/ssh": gen.record(None, True, None, MINUTE, NOW)}
    history["pi1/ssh"]["bits"] = "10" * 50
    assert gen.bound(history, cap=10)["pi1/ssh"]["bits"] == ""
    assert gen.percent("") == "no data" and gen.percent("1-10") == "66.67%"


def test_the_history_follows_the_readings_minute_by_minute() -> None:
    readings = ["junk first", "pi1 ssh 0.0.0.0:20000 1 1779999000", "pi2 web 127.0.0.1:20001 0 -"]
    history = gen.update({}, readings, NOW, {})
    assert list(history) == ["pi1/ssh", "pi2/web"]  # a malformed line is skipped, not the end of the readings
    assert history["pi1/ssh"]["changed"] == 1779999000 and history["pi1/ssh"]["end"] == MINUTE
    history = gen.update(history, readings, NOW + 60, {})
    assert history["pi1/ssh"]["bits"] == "11" and history["pi2/web"]["bits"] == "00"
    assert history["pi1/ssh"]["connects"] == {"2026-05-28": 1}  # the same session: counted once


def test_journal_lines_without_a_message_are_skipped() -> None:
    lines = ["-- Boot 0123456789abcdef --", "-- No entries --",
             "1780000002.5 vps sshd[10]: error: channel_setup_fwd_listener_tcpip: cannot listen to port: 20001"]
    assert gen.errors(lines) == {20001: (1780000002.5, "its forward could not listen: the port was held by another session")}


# ---------------------------------------------------------------------------
# the page


@pytest.mark.parametrize(("seconds", "shown"), [
    (-90, "0 min"), (0, "0 min"), (59 * 60 + 59, "59 min"), (3600, "1 h 0 min"), (120 * 60, "2 h 0 min"),
    (121 * 60, "2 h 1 min"), (48 * 3600 - 1, "47 h 59 min"), (48 * 3600, "2 days"), (9 * 86400 + 5, "9 days"),
])
def test_since_says_how_long_ago_in_minutes_hours_then_days(seconds: float, shown: str) -> None:
    assert gen.ago(seconds) == shown


def test_the_strip_is_oldest_first_with_each_box_titled_from_when_and_how_much_up() -> None:
    svg = gen.strip("1" * 60, 120, 4, MIDNIGHT)  # the last hour up, the hour before not seen
    assert svg == (
        '<svg class="strip" viewBox="0 0 4 1" preserveAspectRatio="none" width="100%" height="14" role="img" '
        'aria-label="2 hours">'
        '<rect x="0" width="0.8" height="1" fill="#bbb"><title>from 2026-05-27 22:00 UTC: not seen</title></rect>'
        '<rect x="1" width="0.8" height="1" fill="#bbb"><title>from 2026-05-27 22:30 UTC: not seen</title></rect>'
        '<rect x="2" width="0.8" height="1" fill="#2e7d32"><title>from 2026-05-27 23:00 UTC: 100.0% up</title></rect>'
        '<rect x="3" width="0.8" height="1" fill="#2e7d32"><title>from 2026-05-27 23:30 UTC: 100.0% up</title></rect>'
        '</svg>')
    assert titles(gen.strip("1" * 9 + "0" + "1" * 8 + "00", 20, 2, MIDNIGHT)) == [
        ("#f9a825", "from 2026-05-27 23:40 UTC: 90.0% up"), ("#c62828", "from 2026-05-27 23:50 UTC: 80.0% up")]


def history_of_two() -> gen.History:
    """pi1/ssh: up two days ago, down, up again 5 minutes ago, its port's last error 10 minutes ago; pi2/web: up
    for the first time now, its session's start unknown."""
    then = NOW - 2 * 86400
    history = gen.update({}, ["pi1 ssh 0.0.0.0:20000 1 %d" % (then - 60)], then, {})
    history = gen.update(history, ["pi1 ssh 0.0.0.0:20000 0 -"], then + 60, {})
    logged = {20000: (NOW - 600, "sshd refused its forward (not permitted)")}
    return gen.update(history, ["pi1 ssh 0.0.0.0:20000 1 %d" % (NOW - 300), "pi2 web 127.0.0.1:20001 1 -"], NOW, logged)


def test_each_row_shows_up_since_when_the_strips_connections_and_the_last_error() -> None:
    history = history_of_two()
    ssh, web = cells(gen.row("pi1/ssh", history["pi1/ssh"], NOW)), cells(gen.row("pi2/web", history["pi2/web"], NOW))
    assert ssh[:4] == ["pi1", "ssh", "up", "2026-05-28 20:21 UTC<br><small>5 min ago</small>"]
    assert ssh[6:] == ["05-28: 1, 05-26: 1",
                       "sshd refused its forward (not permitted) <small>(2026-05-28 20:16 UTC)</small>"]
    day, week = ssh[4], ssh[5]
    assert day.count("<rect") == 48 and week.count("<rect") == 84
    assert 'aria-label="24 hours"' in day and 'aria-label="168 hours"' in week
    # the strips end with the minute of the last reading
    assert titles(day)[0][1].startswith("from 2026-05-27 20:27 UTC") and titles(day)[-1] == ("#2e7d32", "from 2026-05-28 19:57 UTC: 100.0% up")
    assert titles(week)[0][1].startswith("from 2026-05-21 20:27 UTC") and titles(week)[-1][1].startswith("from 2026-05-28 18:27 UTC")
    assert day.endswith("<small>100.00%</small>") and week.endswith("<small>66.67%</small>")  # 2 of 3 minutes seen up
    assert web[2:4] == ["up", "2026-05-28 20:26 UTC<br><small>0 min ago</small>"] and web[6:] == ["none", "none"]
    assert web[4].endswith("<small>100.00%</small>")  # one minute seen: the last 24 hours show it
    assert 'data-pi="a&quot;b" data-tunnel="x&#x27;y"' in gen.row("a\"b/x'y", history["pi2/web"], NOW)


def test_the_page_lists_every_tunnel_and_each_certificate_warned_two_weeks_ahead() -> None:
    page = gen.render("main", history_of_two(), [
        ("unread.example", None), ("soon.example", NOW + 13 * 86400 + 60), ("later.example", NOW + 14 * 86400 + 60)], NOW)
    assert "What VPS main sees, at 2026-05-28 20:26 UTC (renewed every minute" in page
    assert '</tr>\n<tr class="tunnel up" data-pi="pi2"' in page and '<span id="summary">2 of 2 tunnels up.</span>' in page
    assert ("<ul><li>unread.example: expiry unknown (not readable yet)</li>"
            '<li class="warn">soon.example: expires 2026-06-10 20:27 UTC (in 13 days)</li>'
            "<li>later.example: expires 2026-06-11 20:27 UTC (in 14 days)</li></ul>") in page
    assert "<ul><li>none: this VPS serves no certificate of pitunnel's</li></ul>" in gen.render("main", {}, [], NOW)


@pytest.mark.parametrize(("offset", "said"), [
    (13 * 86400 + 60, "expires 2026-06-10 20:27 UTC (in 13 days)"), (3600, "expires 2026-05-28 21:26 UTC (in less than a day)"),
    (0, "EXPIRED 2026-05-28 20:26 UTC (less than a day ago)"), (-3600, "EXPIRED 2026-05-28 19:26 UTC (less than a day ago)"),
    (-2 * 86400 - 60, "EXPIRED 2026-05-26 20:25 UTC (2 days ago)")])
def test_a_certificate_expired_says_so_not_in_minus_days(offset: float, said: str) -> None:
    assert gen.expiry_text(NOW + offset, NOW) == said
    assert f'<li class="warn">x.example: {said}</li>' in gen.render("main", {}, [("x.example", NOW + offset)], NOW)


# ---------------------------------------------------------------------------
# the run the metrics writer makes, in-process (its journalctl a script that logs how it was called)

JOURNAL = ("1780000002.5 vps sshd[1]: error: channel_setup_fwd_listener_tcpip: cannot listen to port: 20001\n"
           "-- Boot 0123456789abcdef --\n")


@pytest.fixture
def vps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A VPS's state directory, with a journalctl on PATH that prints JOURNAL, keeps a cursor file and logs its calls."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    (tmp_path / "journal").write_text(JOURNAL)
    (bin_dir / "journalctl").write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {tmp_path}/calls\n"
        'for a; do case $a in --cursor-file=*) echo s=1 > "${a#--cursor-file=}";; esac; done\n'
        f'case "$*" in *short-unix*) cat {tmp_path}/journal;; *) echo "the journal\'s last line";; esac\n')
    (bin_dir / "journalctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return state


def certificate(path: Path, days: int) -> str:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(path.with_suffix(".key")), "-out", str(path), "-days", str(days), "-subj", "/CN=x"],
                   check=True, capture_output=True, timeout=30)
    return str(path)


def run(state: Path, readings: str, monkeypatch: pytest.MonkeyPatch, umask: int = 0o077, **settings: Any) -> None:
    config = state.parent / "status-page.json"
    config.write_text(json.dumps({"vps": "main", "state_dir": str(state), "certificates": [], **settings}))
    monkeypatch.setattr(sys, "stdin", io.StringIO(readings))
    old = os.umask(umask)  # the files' modes are set, not left to the umask
    try:
        gen.main(str(config))
    finally:
        os.umask(old)


def test_the_writers_run_keeps_the_history_and_writes_the_page(vps: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    began, start = int(time.time()) - 120, time.time()
    readings = f"pi1 ssh 0.0.0.0:20000 1 {began}\npi1 api 127.0.0.1:20001 0 -\n"
    certs = [["soon.example", certificate(vps.parent / "soon.pem", 5)],
             ["later.example", certificate(vps.parent / "later.pem", 30)], ["unread.example", str(vps.parent / "none.pem")]]
    run(vps, readings, monkeypatch, certificates=certs)
    first_done = time.time()
    run(vps, readings, monkeypatch, certificates=certs)  # the second run reads the history the first wrote
    assert capfd.readouterr().out == ""  # nothing on the writer's output (it would land in the journal)
    history = json.loads((vps / "history.json").read_text())
    assert set(history) == {"pi1/ssh", "pi1/api"} and history["pi1/ssh"]["changed"] == began
    assert history["pi1/ssh"]["connects"] == {gen.day(began): 1} and not history["pi1/api"]["up"]
    assert history["pi1/api"]["error"] == [1780000002.5, "its forward could not listen: the port was held by another session"]
    assert (vps / "history.json").stat().st_mode & 0o777 == 0o600
    page = (vps / "www" / "index.html").read_text()
    assert (vps / "www" / "index.html").stat().st_mode & 0o777 == 0o644
    assert {p.name for p in vps.iterdir()} == {"history.json", "www", "cursor"} and os.listdir(vps / "www") == ["index.html"]
    assert '<span id="summary">1 of 2 tunnels up.</span>' in page and 'data-tunnel="api" data-state="down"' in page
    assert re.search(r'<li class="warn">soon\.example: expires [0-9-]+ [0-9:]+ UTC \(in 4 days\)</li>', page)
    assert re.search(r"<li>later\.example: expires [0-9-]+ [0-9:]+ UTC \(in 29 days\)</li>", page)
    assert "<li>unread.example: expiry unknown (not readable yet)</li>" in page
    first, cursor, then = (vps.parent / "calls").read_text().splitlines()
    read = "-q -o short-unix -t sshd -t sshd-session -t pitunnel-reaper"
    assert first.startswith(f"{read} --since=@")  # the first run reads the last 7 days
    assert int(start - 7 * 86400) <= int(first.rsplit("@", 1)[1]) <= int(first_done - 7 * 86400)
    assert cursor == f"-q -n 1 -o cat --cursor-file={vps}/cursor"  # the first run sets the cursor at the journal's end
    assert then == f"{read} --cursor-file={vps}/cursor"  # later runs read from it


def test_a_bad_history_file_starts_afresh_and_the_cap_is_the_settings(vps: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("{not json", "[1, 2]"):
        (vps / "history.json").write_text(bad)
        run(vps, "pi1 ssh 0.0.0.0:20000 0 -\n", monkeypatch, umask=0o002)
        assert json.loads((vps / "history.json").read_text())["pi1/ssh"]["bits"] == "0"
    assert (vps / "www").stat().st_mode & 0o777 == 0o755  # Nginx reads the page; only the writer changes it
    history = {f"pi{i}/ssh": gen.record(None, True, None, MINUTE - gen.WEEK, NOW) for i in range(3)}
    for e in history.values():
        e["bits"] = "1" * gen.WEEK
    (vps / "history.json").write_text(json.dumps(history))
    run(vps, "".join(f"pi{i} ssh 0.0.0.0:2000{i} 1 -\n" for i in range(3)), monkeypatch, cap=3000)
    assert len((vps / "history.json").read_text()) <= 3000


def test_each_run_carries_the_history_on(vps: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tunnel down since an hour ago and seen down a minute ago: the next run adds a minute, down since then."""
    now = time.time()
    before = gen.record(None, False, None, int(now // 60) - 1, now - 3600)
    (vps / "history.json").write_text(json.dumps({"pi1/ssh": before}))
    run(vps, "pi1 ssh 0.0.0.0:20000 0 -\n", monkeypatch)
    after = json.loads((vps / "history.json").read_text())["pi1/ssh"]
    assert after["changed"] == now - 3600 and re.fullmatch(r"0-*0", after["bits"])  # "-": a minute turned meanwhile
    assert re.search(r"<small>1 h [01] min ago</small>", (vps / "www" / "index.html").read_text())


def test_without_journalctl_or_openssl_the_page_is_still_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gen.journal(str(tmp_path), NOW) == [] and gen.expiry(str(tmp_path / "cert.pem")) is None


# ---------------------------------------------------------------------------
# what provision-vps sends for it


def test_the_certificates_shown_are_each_served_name_once() -> None:
    variables: dict[str, Any] = {"site_tls": {"certificate": "/etc/site.pem"}, "public_name": None, "tunnels": [
        {"server_name": "web.example.com", "tls": {"certificate": "/etc/web.pem"}},
        {"server_name": "web.example.com", "tls": {"certificate": "/etc/other.pem"}},
        {"server_name": "plain.example.com", "tls": None}, {"server_name": None, "tls": {"certificate": "/etc/x.pem"}}]}
    assert statuspage.certificates(variables) == [("path-prefix server", "/etc/site.pem"), ("web.example.com", "/etc/web.pem")]
