"""Ending the sessions of retired keys (pitunnel/roles/vps/sessions.py): reading the sessions fact, which
keys authorized_keys grants, and which sessions go; the ending script runs on a real shell."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from pitunnel.facts import Facts, FileState, file_fact
from pitunnel.ops import File
from pitunnel.roles.vps.sessions import (Grant, Session, Sessions, SessionsEnded, end_commands, grants,
                                         parse_sessions, sessions_fact, unauthorised)
from pitunnel.sshkeys import parse_public_key
from tests.unit.test_templates import keygen

OPTIONS = 'restrict,port-forwarding,permitlisten="127.0.0.1:20022",command="/bin/false"'


def journal(pid: int, message: str) -> str:
    return "J " + json.dumps({"__CURSOR": "s=1", "MESSAGE": message, "_PID": str(pid)})


def accepted(fp: str, user: str = "pitunnel", address: str = "198.51.100.7") -> str:
    return f"Accepted publickey for {user} from {address} port 40000 ssh2: ED25519 {fp}"


def test_the_fact_reads_sessions_their_keys_and_the_clock() -> None:
    out = "\n".join([
        "NOW 20261206051500 20261206041500",
        "S 200 100", "S 201 101", "S 202 102",
        journal(100, accepted("SHA256:old")),
        journal(100, accepted("SHA256:new")),  # the same pid used again later in the boot: the last login wins
        journal(101, accepted("SHA256:other", user="root")),  # another account's login never counts
        "J not json", "S x y",
    ])
    found = parse_sessions("pitunnel")(out)
    assert found == Sessions((Session(200, 100, "SHA256:new", "198.51.100.7"), Session(201, 101, None, ""),
                              Session(202, 102, None, "")), "20261206051500", "20261206041500")


def test_no_account_means_no_sessions() -> None:
    assert parse_sessions("pitunnel")("NOACCOUNT\n") == Sessions(account=False)


def test_a_forged_message_under_another_field_is_not_a_login() -> None:
    out = "S 200 100\nJ " + json.dumps({"MESSAGE": ["bytes"], "_PID": "100"}) + "\n" + journal(100, "x " + accepted("SHA256:a"))
    assert parse_sessions("pitunnel")(out).sessions == (Session(200, 100, None, ""),)


def test_grants_read_keys_and_expiry(tmp_path: Path) -> None:
    a, b, c = (keygen(tmp_path / n) for n in "abc")
    text = (f"{OPTIONS} {a.split()[0]} {a.split()[1]} pitunnel:alpha\n"
            f'expiry-time="20261207",{OPTIONS} {b.split()[0]} {b.split()[1]} pitunnel:beta\n'
            f'expiry-time="202612071230Z" {c.split()[0]} {c.split()[1]}\n'
            "# a comment\nnot a key line\nssh-ed25519 AAAAnotbase64 x\n")
    fa, fb, fc = (parse_public_key(k).fingerprint for k in (a, b, c))
    assert grants(text) == {fa: Grant(fa), fb: Grant(fb, "20261207000000"), fc: Grant(fc, "20261207123000", True)}


def test_which_sessions_go() -> None:
    granted = {"SHA256:pi": Grant("SHA256:pi"), "SHA256:enrol": Grant("SHA256:enrol", "20261206000000"),
               "SHA256:later": Grant("SHA256:later", "20261206050000", utc=True)}
    sessions = (Session(1, 11, "SHA256:pi"), Session(2, 12, "SHA256:old"), Session(3, 13, None),
                Session(4, 14, "SHA256:enrol"), Session(5, 15, "SHA256:later"))
    stale = unauthorised(Sessions(sessions, "20261206051500", "20261206041500"), granted)
    assert [(s.pid, why) for s, why in stale] == [
        (2, "key SHA256:old is no longer authorised"), (3, "its login is not in sshd's log"),
        (4, "key SHA256:enrol expired (20261206000000)")]
    # the UTC expiry passes once the VPS's UTC clock is past it
    stale = unauthorised(Sessions(sessions, "20261206061500", "20261206051500"), granted)
    assert [s.pid for s, _ in stale] == [2, 3, 4, 5]
    assert unauthorised(Sessions((Session(1, 11, "SHA256:pi"),)), granted) == []


def _facts(op: SessionsEnded, keys_text: str, sessions_out: str) -> Facts:
    state = f"pitunnel:pitunnel:600\n{base64.b64encode(keys_text.encode()).decode()}"
    return Facts({file_fact(op.keys_path).key: (0, state), sessions_fact("pitunnel").key: (0, sessions_out)})


def test_the_op_ends_what_the_file_as_written_no_longer_grants(tmp_path: Path) -> None:
    old, new = keygen(tmp_path / "old"), keygen(tmp_path / "new")
    fold, fnew = parse_public_key(old).fingerprint, parse_public_key(new).fingerprint
    before = f"{OPTIONS} {old} \n{OPTIONS} {new}\n"
    out = "\n".join(["NOW 20261206051500 20261206041500", "S 200 100", "S 201 101",
                     journal(100, accepted(fold)), journal(101, accepted(fnew))])
    keys = File("/var/lib/pitunnel/.ssh/authorized_keys", lambda state: f"{OPTIONS} {new}\n")
    op = SessionsEnded("pitunnel", keys)
    plan = op.plan(_facts(op, before, out))
    assert plan.sessions_ended == 1 and "200:100" in plan.commands[0] and "201" not in plan.commands[0]
    assert plan.reason == f"end 1 session (pid 200 from 198.51.100.7: key {fold} is no longer authorised)"
    # without a file op: the file as it is now grants both
    now = SessionsEnded("pitunnel")
    plan = now.plan(_facts(now, before, out))
    assert (plan.commands, plan.reason) == ([], "none: every session of pitunnel (2) logged in with a key "
                                                "authorised now")
    gone = SessionsEnded("pitunnel").plan(_facts(now, before, "NOACCOUNT"))
    assert (gone.commands, gone.reason) == ([], "pitunnel is not there: no sessions")


def test_the_ending_script_ends_only_the_session_it_was_told(tmp_path: Path) -> None:
    """On this machine's shell, as the runner applies it (under `set -e`): a process whose parent is the
    named monitor (a shell that waits for it and reaps it, as sshd's monitor does) ends; one whose parent
    is not (the pid reused by another process) is left alone."""
    me = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    monitors = [subprocess.Popen(["bash", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
                for _ in range(2)]
    ours = other = 0
    try:
        ours, other = (int(m.stdout.readline()) for m in monitors if m.stdout)
        script = "\n".join(end_commands(me, [Session(ours, monitors[0].pid), Session(other, 1)]))
        subprocess.run(["bash", "-c", f"( set -e\n{script}\n)"], check=True, timeout=30)
        assert monitors[0].wait(timeout=10) == 0  # its child ended, and it reaped it
        assert monitors[1].poll() is None and os.path.exists(f"/proc/{other}")
    finally:
        for m in monitors:
            m.kill()
            m.wait()
        for pid in (ours, other):
            if pid and os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)
    assert end_commands(me, []) == []


def test_the_reaper_reads_a_holders_key_as_authorised_for_a_port_or_not(tmp_path: Path) -> None:
    """The reaper ends the holder of a port whose key is not authorised for it now: not in the file, its
    expiry-time passed, or its permitlisten does not allow the port."""
    from pitunnel.roles.vps.role import ROLE

    fps, lines = [], []
    for name, expiry in (("a", ""), ("b", 'expiry-time="20200101",'), ("c", 'expiry-time="209901011200Z",')):
        pub = keygen(tmp_path / name).split()
        lines.append(f'{expiry}restrict,port-forwarding,permitlisten="0.0.0.0:12346",command="/bin/false" '
                     f"{pub[0]} {pub[1]} pitunnel:pi1")
        fps.append(parse_public_key(" ".join(pub[:2])).fingerprint)
    (tmp_path / "authorized_keys").write_text("\n".join(lines) + "\n")
    script = ROLE.render("reaper.sh.j2")
    functions = script[script.index("permitted() {"):script.index("owner_of() {")]
    probe = (f'keys={tmp_path}/authorized_keys\n{functions}\n'
             'for pair in "$1 12346" "$1 12347" "$2 12346" "$3 12346" "SHA256:gone 12346"; do\n'
             '  permitted $pair && echo yes || echo no; done')
    run = subprocess.run(["bash", "-c", probe, "probe", *fps], capture_output=True, text=True, timeout=20)
    assert run.stdout.splitlines() == ["yes", "no", "no", "yes", "no"], run.stderr


def test_end_unauthorised_checks_ends_and_counts_in_the_recap(tmp_path: Path) -> None:
    """On a scripted VPS: check mode says what it would end and sends nothing; a run ends it and the recap
    (printed and --json) counts it."""
    import io

    from pitunnel.report import Reporter
    from pitunnel.roles.vps.sessions import end_unauthorised
    from pitunnel.runner import Mode
    from tests.unit.fake_hosts import FakeHost, load

    old, new = keygen(tmp_path / "old"), keygen(tmp_path / "new")
    keys = base64.b64encode(f"{OPTIONS} {new}\n".encode()).decode()
    sessions = "\n".join(["NOW 20261206051500 20261206041500", "S 200 100", "S 201 101",
                          journal(100, accepted(parse_public_key(old).fingerprint)),
                          journal(101, accepted(parse_public_key(new).fingerprint))])
    vps = load(tmp_path, """
        settings: {laptop_key: null, known_hosts: kh}
        vps: {main: {address: 203.0.113.1}}
        pis: {alpha: {address: 10.0.0.2, vps: main, tunnels: {ssh: {type: ssh, remote_port: 20022}}}}
        """).vps["main"]
    for check in (True, False):
        host = FakeHost("vps", [("grep -sE '^(Name|PPid|Uid)", sessions), ("authorized_keys", f"pitunnel:pitunnel:600\n{keys}")])
        out = io.StringIO()
        reporter = Reporter(colour=False, out=out)
        assert end_unauthorised(host, vps, reporter, Mode(check=check)) == 1  # type: ignore[arg-type]
        recap = reporter.recaps["vps"]
        assert recap.changed == 1 and recap.steps[0].reason.startswith("end 1 session (pid 200 from 198.51.100.7")
        assert host.applied("kill -TERM") is not check and recap.sessions_ended == (0 if check else 1)
        reporter.print_recap()
        assert ("sessions_ended=1" in out.getvalue()) is not check
        assert recap.document()["sessions_ended"] == (0 if check else 1)
