#!/usr/bin/python3
"""The status page's generator, run on the VPS (`status_page:`, docs/monitoring.md): pitunnel's metrics writer
calls it once a minute, and at once when a tunnel goes up or down, with one line per tunnel of this VPS on its
standard input ("PI TUNNEL LISTEN UP SINCE": UP 1 or 0, SINCE the session's start in Unix time or -).

It keeps each tunnel's history in one JSON file (one character per minute for 7 days, connections per day, the
last error sshd or the reaper logged for its port), bounded in size, and writes a static HTML page with inline
SVG strips: no JavaScript, nothing fetched from anywhere. Standard library only (Debian's python3); this file is
copied to the VPS as it is, and its pure parts are unit-tested on the laptop (tests/unit/test_status_page.py).
"""

from __future__ import annotations

import calendar
import html
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

WEEK = 7 * 24 * 60  # minutes of history kept per tunnel
DAY = 24 * 60
CAP = 4 << 20  # bytes: the history file never grows past this (the oldest minutes go first)
UP, DOWN, SOME, NONE = "1", "0", "~", "-"  # a minute: up all along, down all along, both, not seen (VPS off)
WARN_DAYS = 14  # a certificate expiring sooner is shown as a warning (verify's cert_expiry_days)

Entry = dict[str, Any]
History = dict[str, Entry]  # "PI/TUNNEL" -> its entry


def day(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def record(entry: Entry | None, up: bool, since: int | None, minute: int, now: float) -> Entry:
    """`entry` (None: a tunnel seen for the first time) after one reading: the minute's character (up, down, or
    both when its readings differ), when it went up or down, and each new session counted on the day it began."""
    e: Entry = entry or {"bits": "", "end": minute, "up": up, "changed": since if up and since else now,
                         "session": None, "connects": {}, "error": None}
    bits, end = e["bits"], e["end"]
    if bits and minute == end:
        bits = bits[:-1] + (bits[-1] if bits[-1] == (UP if up else DOWN) else SOME)
    elif minute > end or not bits:
        gap = min(max(minute - end - 1, 0), WEEK) if bits else 0
        bits += NONE * gap + (UP if up else DOWN)
    e["bits"], e["end"] = bits[-WEEK:], max(minute, end)
    if up != e["up"]:
        e["up"], e["changed"] = up, (since if up and since else now)
    if up and since and since != e["session"]:
        e["session"] = since
        e["connects"][day(since)] = e["connects"].get(day(since), 0) + 1
    kept = {day(now - d * 86400) for d in range(7)}
    e["connects"] = {d: n for d, n in e["connects"].items() if d in kept}
    return e


def bound(history: History, cap: int = CAP) -> History:
    """At most 7 days per tunnel, and the whole history within `cap` bytes once written: when more tunnels
    than that fit, each keeps as many of its newest minutes as its share allows."""
    for e in history.values():
        e["bits"] = e["bits"][-WEEK:]
    size = len(json.dumps(history))
    if size > cap and history:
        rest = size - sum(len(e["bits"]) for e in history.values())
        share = max((cap - rest) // len(history), 0)
        for e in history.values():
            e["bits"] = e["bits"][-share:] if share else ""
    return history


# sshd's and the reaper's lines about a tunnel's port, as the page shows them: a fixed text each (the log lines
# hold addresses and key fingerprints, which the page never shows)
ERRORS = (
    (re.compile(r"cannot listen to port: (\d+)$"), "its forward could not listen: the port was held by another session"),
    (re.compile(r"remote forward to host \S+ port (\d+), but the request was denied"), "sshd refused its forward (not permitted)"),
    (re.compile(r"^ended stale session \(pid \d+\) holding port (\d+)"), "a stale session holding its port was ended"),
    (re.compile(r"^port (\d+): held by session"), "its port is held by another key's session (left alone)"),
)


def errors(lines: list[str]) -> dict[int, tuple[float, str]]:
    """The last error per port among journal lines `TIME HOST IDENT[PID]: MESSAGE` (journalctl -o short-unix)."""
    found: dict[int, tuple[float, str]] = {}
    for line in lines:
        stamp, _, rest = line.partition(" ")
        message = rest.split(": ", 1)[1] if ": " in rest else ""
        for pattern, text in ERRORS:
            m = pattern.search(message)
            if m:
                try:
                    found[int(m.group(1))] = (float(stamp), text)
                except ValueError:
                    pass
                break
    return found


def update(history: History, readings: list[str], now: float, logged: dict[int, tuple[float, str]]) -> History:
    """The history after the writer's `readings` ("PI TUNNEL LISTEN UP SINCE" lines): tunnels no longer on this
    VPS dropped, the errors `logged` for a tunnel's port kept as its last."""
    minute = int(now // 60)
    result: History = {}
    for line in readings:
        parts = line.split()
        if len(parts) != 5:
            continue
        pi, tunnel, listen, up, since = parts
        key = f"{pi}/{tunnel}"
        e = record(history.get(key), up == "1", int(since) if since.isdigit() else None, minute, now)
        port = listen.rsplit(":", 1)[-1]
        if port.isdigit() and int(port) in logged:
            e["error"] = list(logged[int(port)])
        result[key] = e
    return result


def ago(seconds: float) -> str:
    minutes = max(int(seconds // 60), 0)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes // 1440} days"


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def uptime(bits: str) -> float | None:
    """The share of the minutes seen that were up (a minute both up and down counts half); None if none was seen."""
    seen = len(bits) - bits.count(NONE)
    return (bits.count(UP) + bits.count(SOME) / 2) / seen if seen else None


def strip(bits: str, minutes: int, segments: int, end: float) -> str:
    """An inline SVG strip of `segments` boxes for the last `minutes` of `bits` (the last is the minute of `end`):
    green all up, amber mostly up, red less, grey not seen."""
    window = (NONE * minutes + bits)[-minutes:]
    size = minutes // segments
    boxes = []
    for i in range(segments):
        part = window[i * size:(i + 1) * size]
        share = uptime(part)
        colour = "#bbb" if share is None else "#2e7d32" if share == 1 else "#f9a825" if share >= 0.9 else "#c62828"
        begin = end - (minutes - i * size) * 60
        label = "not seen" if share is None else f"{share:.1%} up"
        boxes.append(f'<rect x="{i}" width="0.8" height="1" fill="{colour}"><title>from {stamp(begin)}: '
                     f'{label}</title></rect>')
    return (f'<svg class="strip" viewBox="0 0 {segments} 1" preserveAspectRatio="none" width="100%" height="14" '
            f'role="img" aria-label="{minutes // 60} hours">{"".join(boxes)}</svg>')


def percent(bits: str) -> str:
    share = uptime(bits)
    return "no data" if share is None else f"{share:.2%}"


STYLE = """body{font:15px/1.4 system-ui,sans-serif;margin:1em;color:#222}h1{font-size:1.3em}
table{border-collapse:collapse;width:100%}th,td{padding:.35em .5em;border-bottom:1px solid #ddd;text-align:left;
vertical-align:top}td.since{white-space:nowrap}.wrap{overflow-x:auto}.up .state{color:#2e7d32;font-weight:bold}.down .state{color:#c62828;
font-weight:bold}td.strip{min-width:9em}.meta,small{color:#666}.warn{color:#c62828;font-weight:bold}"""


def row(key: str, e: Entry, now: float) -> str:
    pi, tunnel = (html.escape(part, quote=True) for part in key.split("/", 1))
    state = "up" if e["up"] else "down"
    connects = ", ".join(f"{d[5:]}: {n}" for d, n in sorted(e["connects"].items(), reverse=True)) or "none"
    error = f"{html.escape(e['error'][1])} <small>({stamp(e['error'][0])})</small>" if e.get("error") else "none"
    day_bits, end = e["bits"][-DAY:], e["end"] * 60 + 60
    return (f'<tr class="tunnel {state}" data-pi="{pi}" data-tunnel="{tunnel}" data-state="{state}">'
            f'<td>{pi}</td><td>{tunnel}</td><td class="state">{state}</td>'
            f'<td class="since">{stamp(e["changed"])}<br><small>{ago(now - e["changed"])} ago</small></td>'
            f'<td class="strip">{strip(day_bits, DAY, 48, end)}<small>{percent(day_bits)}</small></td>'
            f'<td class="strip">{strip(e["bits"], WEEK, 84, end)}<small>{percent(e["bits"])}</small></td>'
            f'<td>{connects}</td><td>{error}</td></tr>')


def expiry_text(expires: float, now: float) -> str:
    """When a certificate expires, or expired, counted in whole days."""
    if expires <= now:
        days = int((now - expires) // 86400)
        return f"EXPIRED {stamp(expires)} ({'less than a day' if days == 0 else f'{days} days'} ago)"
    days = int((expires - now) // 86400)
    return f"expires {stamp(expires)} ({'in less than a day' if days == 0 else f'in {days} days'})"


def render(vps: str, history: History, certificates: list[tuple[str, float | None]], now: float) -> str:
    """The page: every tunnel of this VPS as it sees them, and the expiry of the certificates it serves."""
    name = html.escape(vps)
    up = sum(1 for e in history.values() if e["up"])
    rows = "\n".join(row(key, history[key], now) for key in history)
    certs = []
    for cert, expires in certificates:
        if expires is None:
            certs.append(f"<li>{html.escape(cert)}: expiry unknown (not readable yet)</li>")
            continue
        days = int((expires - now) // 86400)
        warn = ' class="warn"' if days < WARN_DAYS else ""
        certs.append(f"<li{warn}>{html.escape(cert)}: {expiry_text(expires, now)}</li>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="60"><title>pitunnel: {name}</title><style>{STYLE}</style></head>
<body><h1>pitunnel: {name}</h1>
<p class="meta">What VPS {name} sees, at {stamp(now)} (renewed every minute and at each change).
<span id="summary">{up} of {len(history)} tunnels up.</span></p>
<div class="wrap"><table><thead><tr><th>Pi</th><th>tunnel</th><th>now</th><th>since</th><th>last 24 hours</th>
<th>last 7 days</th><th>connections per day (UTC)</th><th>last error</th></tr></thead>
<tbody>
{rows}
</tbody></table></div>
<h2>Certificates</h2>
<ul>{"".join(certs) or "<li>none: this VPS serves no certificate of pitunnel's</li>"}</ul>
</body></html>
"""


def expiry(path: str) -> float | None:
    """A certificate file's notAfter (Unix time), by openssl; None if it cannot be read."""
    try:
        out = subprocess.run(["openssl", "x509", "-enddate", "-noout", "-in", path], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        return float(calendar.timegm(time.strptime(out.split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")))
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        return None


def journal(state: str, now: float) -> list[str]:
    """sshd's and the reaper's journal lines since the last run (the last 7 days on the first)."""
    cursor = os.path.join(state, "cursor")
    read = ["journalctl", "-q", "-o", "short-unix", "-t", "sshd", "-t", "sshd-session", "-t", "pitunnel-reaper"]
    try:
        if os.path.exists(cursor):
            return subprocess.run([*read, f"--cursor-file={cursor}"], capture_output=True, text=True,
                                  timeout=30).stdout.splitlines()
        # the first run: --since and --cursor-file do not go together (systemd 254 on refuses both), so the week
        # is read first, then the cursor set at the journal's end
        lines = subprocess.run([*read, f"--since=@{int(now - 7 * 86400)}"], capture_output=True, text=True,
                               timeout=30).stdout.splitlines()
        subprocess.run(["journalctl", "-q", "-n", "1", "-o", "cat", f"--cursor-file={cursor}"], capture_output=True,
                       timeout=30)
        return lines
    except (OSError, subprocess.SubprocessError):
        return []


def write(path: str, text: str, mode: int) -> None:
    """`text` to `path` through a temporary name: a reader never sees half of it."""
    tmp = f"{path}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def main(config_path: str) -> None:
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    state, now = config["state_dir"], time.time()
    try:
        with open(os.path.join(state, "history.json"), encoding="utf-8") as f:
            history = json.load(f)
    except (OSError, ValueError):
        history = {}
    history = bound(update(history if isinstance(history, dict) else {}, sys.stdin.read().splitlines(), now,
                           errors(journal(state, now))), config.get("cap", CAP))
    write(os.path.join(state, "history.json"), json.dumps(history), 0o600)
    certificates = [(name, expiry(path)) for name, path in config["certificates"]]
    os.makedirs(os.path.join(state, "www"), mode=0o755, exist_ok=True)
    write(os.path.join(state, "www", "index.html"), render(config["vps"], history, certificates, now), 0o644)


if __name__ == "__main__":
    main(sys.argv[1])
