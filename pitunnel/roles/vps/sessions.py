"""The live sessions of the tunnel account, and ending those whose key the VPS no longer authorises.

sshd reads a key's `authorized_keys` options (`permitlisten`, `expiry-time`) once, at login: rewriting
the file touches no session already logged in, and `ssh -N` with keepalives lives on. So wherever a key
leaves the file (rotate-keys, teardown -l, a Pi dropped from the inventory, migrate), its sessions are
ended here, in the same converge, right after the file is written.

A session is two sshd processes: its privileged monitor (root, a child of the listening sshd) and the
session's own process (the tunnel account's uid, a child of the monitor; it holds the session's
listeners). The key it logged in with is the monitor's own journal line, "Accepted publickey for USER
from ADDR port P ssh2: TYPE SHA256:..." (LogLevel VERBOSE in the Match block), which journald files
under the monitor's pid, uid and command as the kernel gives them: a client cannot forge it.

A session whose login line cannot be found (the journal dropped it, or journald has not written it
yet) is ended too. The account is pitunnel's alone, and only the Pis log in to it: a real Pi's
autossh logs in again within seconds (a new, logged login), while a session nobody can tie to an
authorised key is exactly what this layer exists to end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pitunnel.facts import Fact, Facts, file_fact
from pitunnel.inventory import VpsSpec
from pitunnel.ops import File, Op, Plan, q
from pitunnel.remote import Remote
from pitunnel.report import Reporter
from pitunnel.runner import Mode, converge
from pitunnel.sshkeys import LAYOUT, BadPublicKey, parse_public_key
from pitunnel.roles.vps.role import VPS_DEFAULTS

KEYS_FILE = f"{VPS_DEFAULTS['tunnel_home']}/.ssh/authorized_keys"
ACCEPTED = re.compile(r"^Accepted publickey for (\S+) from (\S+) port (\d+) ssh2: [A-Z0-9-]+ (SHA256:[A-Za-z0-9+/]+)$")
EXPIRY = re.compile(r'(?:^|,)expiry-time="(\d{8}(?:\d{4}(?:\d{2})?)?)(Z?)"', re.IGNORECASE)
END_WAIT_SECONDS = 5  # how long a session gets to go after SIGTERM before SIGKILL


@dataclass(frozen=True)
class Session:
    """One logged-in session of the tunnel account: its process (the account's uid), its monitor (root),
    the fingerprint of the key it logged in with (None: no login line found) and where it came from."""

    pid: int
    monitor: int
    fingerprint: str | None = None
    address: str = ""


@dataclass(frozen=True)
class Sessions:
    """What the VPS says: the account's sessions, and its clock (YYYYMMDDHHMMSS, local time and UTC: sshd
    reads an `expiry-time` in the VPS's time zone, or in UTC with a trailing Z). `account`: False when the
    tunnel account is not there (then there are no sessions)."""

    sessions: tuple[Session, ...] = ()
    now_local: str = ""
    now_utc: str = ""
    account: bool = True


@dataclass(frozen=True)
class Grant:
    """One key of authorized_keys: its fingerprint and its `expiry-time` (14 digits, whether UTC), if any."""

    fingerprint: str
    expiry: str | None = None
    utc: bool = False


def sessions_fact(user: str) -> Fact[Sessions]:
    """The tunnel account's sessions, each with the key its monitor logged it in with, and the VPS's clock."""
    script = f"""u=$(id -u {q(user)} 2>/dev/null) || {{ echo NOACCOUNT; exit 0; }}
echo "NOW $(date +%Y%m%d%H%M%S) $(date -u +%Y%m%d%H%M%S)"
found=$(grep -sE '^(Name|PPid|Uid):' /proc/[0-9]*/status |
        awk -F'[:\\t ]+' -v u="$u" '{{split($1, a, "/"); p = a[3]}} $2 == "Name" {{n[p] = $3}} $2 == "PPid" {{pp[p] = $3}}
          $2 == "Uid" {{id[p] = $3}}
          END {{for (p in id) {{m = pp[p]; if (id[p] == u && n[p] ~ /^sshd(-session)?$/ && n[m] ~ /^sshd(-session)?$/ && id[m] == 0)
                print "S " p " " m}}}}')
[ -z "$found" ] || echo "$found"
mons=$(echo "$found" | awk '$1 == "S" {{printf " _PID=%s", $3}}')
if [ -n "$mons" ]; then
  journalctl -q -b -o json --output-fields=MESSAGE,_PID _UID=0 _COMM=sshd _COMM=sshd-session $mons 2>/dev/null |
    grep -F 'Accepted publickey for ' | sed 's/^/J /'
fi
true"""
    return Fact(f"tunnel-sessions:{user}", script, parse_sessions(user))


def parse_sessions(user: str) -> Callable[[str], Sessions]:
    """The fact's parse step for the account `user` (a login line for another account never counts)."""

    def parse(output: str) -> Sessions:
        if output.strip().startswith("NOACCOUNT"):
            return Sessions(account=False)
        now_local = now_utc = ""
        found: dict[int, int] = {}
        logins: dict[int, tuple[str, str]] = {}  # monitor -> its last login (fingerprint, address)
        for line in output.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "NOW" and len(rest.split()) == 2:
                now_local, now_utc = rest.split()
            elif kind == "S" and len(rest.split()) == 2 and all(w.isdigit() for w in rest.split()):
                pid, monitor = (int(w) for w in rest.split())
                found[pid] = monitor
            elif kind == "J":
                try:
                    entry = json.loads(rest)
                except ValueError:
                    continue
                message, pid = entry.get("MESSAGE"), entry.get("_PID")
                if not isinstance(message, str) or not isinstance(pid, str) or not pid.isdigit():
                    continue
                match = ACCEPTED.match(message)
                if match and match.group(1) == user:
                    logins[int(pid)] = (match.group(4), match.group(2))  # the journal's order: the last one wins
        sessions = []
        for pid, monitor in sorted(found.items()):
            fingerprint, address = logins.get(monitor, (None, ""))
            sessions.append(Session(pid, monitor, fingerprint, address))
        return Sessions(tuple(sessions), now_local, now_utc)

    return parse


def grants(text: str) -> dict[str, Grant]:
    """The keys an authorized_keys text authorises, by fingerprint (a line that is no key is no grant)."""
    found: dict[str, Grant] = {}
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        at = next((i for i, w in enumerate(words[:-1]) if w in LAYOUT), None)
        if at is None:
            continue
        try:
            key = parse_public_key(f"{words[at]} {words[at + 1]}")
        except BadPublicKey:
            continue
        options = " ".join(words[:at])
        expiry = EXPIRY.search(options)
        grant = Grant(key.fingerprint, expiry.group(1).ljust(14, "0") if expiry else None,
                      bool(expiry and expiry.group(2)))
        # the same key on two lines: sshd takes the first line that matches
        found.setdefault(key.fingerprint, grant)
    return found


def unauthorised(found: Sessions, granted: Mapping[str, Grant]) -> list[tuple[Session, str]]:
    """Each session the keys `granted` do not cover now, with why: its key is not there, its expiry-time
    has passed, or its login is not in sshd's log."""
    stale = []
    for session in found.sessions:
        if session.fingerprint is None:
            stale.append((session, "its login is not in sshd's log"))
            continue
        grant = granted.get(session.fingerprint)
        if grant is None:
            stale.append((session, f"key {session.fingerprint} is no longer authorised"))
        elif grant.expiry is not None:
            now = found.now_utc if grant.utc else found.now_local
            if len(now) == 14 and now > grant.expiry:
                stale.append((session, f"key {session.fingerprint} expired ({grant.expiry}{'Z' if grant.utc else ''})"))
    return stale


def end_commands(user: str, stale: Sequence[Session]) -> list[str]:
    """SIGTERM to each session's process, only while it is still that session (the account's uid, the same
    monitor), then SIGKILL to any still there after END_WAIT_SECONDS. Its monitor exits with it.
    Runs under `set -e` (as the runner applies ops): no line may fail but on purpose."""
    if not stale:
        return []
    pairs = " ".join(f"{s.pid}:{s.monitor}" for s in stale)
    return [f"""u=$(id -u {q(user)}); alive=
for pair in {pairs}; do
  pid=${{pair%:*}} mon=${{pair#*:}}
  [ "$(awk '$1 == "PPid:" {{print $2}}' /proc/$pid/status 2>/dev/null)" = "$mon" ] || continue
  [ "$(awk '$1 == "Uid:" {{print $2}}' /proc/$pid/status 2>/dev/null)" = "$u" ] || continue
  kill -TERM "$pid" 2>/dev/null && alive="$alive $pid"
done
for i in $(seq {END_WAIT_SECONDS * 10}); do
  left=
  for pid in $alive; do  # a zombie has ended: its monitor reaps it
    s=$(awk '$1 == "State:" {{print $2}}' /proc/$pid/status 2>/dev/null) || s=
    [ -n "$s" ] && [ "$s" != Z ] && left="$left $pid"
  done
  alive=$left; [ -z "$alive" ] && break; sleep 0.1
done
for pid in $alive; do kill -KILL "$pid" 2>/dev/null || true; done"""]


def _shown(stale: Sequence[tuple[Session, str]]) -> str:
    return "; ".join(f"pid {s.pid}{f' from {s.address}' if s.address else ''}: {why}" for s, why in stale)


@dataclass
class SessionsEnded(Op):
    """Every live session of the tunnel account that the tunnel account's authorized_keys does not
    authorise (see `unauthorised`) ended. `keys`: the authorized_keys op of the same converge, placed
    before this one: the file as that op writes it is the one that counts (so check mode lists what the
    change would end). None: the file as it is on the VPS now."""

    user: str
    keys: File | None = None
    title: str = "sessions of retired keys ended"

    @property
    def keys_path(self) -> str:
        return self.keys.path if self.keys is not None else KEYS_FILE

    def facts(self) -> list[Fact[Any]]:
        return [file_fact(self.keys_path), sessions_fact(self.user)]

    def granted(self, facts: Facts) -> dict[str, Grant]:
        state = facts.file(self.keys_path)
        if self.keys is not None:
            return grants(self.keys.wanted(state))
        return grants(state.content.decode(errors="replace") if state.exists and state.symlink is None else "")

    def plan(self, facts: Facts) -> Plan:
        found = facts.value(sessions_fact(self.user))
        if not found.account:
            return Plan([], f"{self.user} is not there: no sessions")
        stale = unauthorised(found, self.granted(facts))
        if not stale:
            return Plan([], f"none: every session of {self.user} ({len(found.sessions)}) logged in with a key "
                        "authorised now")
        return Plan(end_commands(self.user, [s for s, _ in stale]),
                    f"end {len(stale)} session{'s' if len(stale) != 1 else ''} ({_shown(stale)})",
                    sessions_ended=len(stale))


def end_unauthorised(remote: Remote, vps: VpsSpec, reporter: Reporter, mode: Mode) -> int:
    """End every session of `vps`'s tunnel account that its authorized_keys, as it is now, does not
    authorise: a key no longer in the file, an `expiry-time` passed, or a login not in sshd's log.

    One read of the VPS, then one script if anything is to end; reported as one line, and counted in the
    recap (`sessions_ended=`). Check mode reports what it would end and ends nothing. A rerun finds
    nothing to end and says so. Returns the number of sessions ended (check mode: that would be ended).
    Raises StepFailed if the ending script fails.

    Where a step writes authorized_keys itself, put `SessionsEnded(user, keys=that_file_op)` after the
    file op in the same converge instead (see roles/vps/authorized.keys_ops)."""
    op = SessionsEnded(vps.tunnel_user)
    done = converge(remote, [op], reporter, mode)
    return sum(p.sessions_ended for _, p in done.plans)
