"""pitunnel.remote and pitunnel.hostkeys against a real SSH server on loopback (tests/unit/sshd_fake.py):
the host-key policy (unknown refused unless accept-new, changed always refused, a pin alone decides), sudo
refused or given its password on stdin, and what one run sends and returns."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from pitunnel import hostkeys
from pitunnel import remote as remote_module
from pitunnel.hostkeys import CheckPolicy, HostKeyRefused
from pitunnel.inventory import HostSpec
from pitunnel.remote import Credentials, Remote, SudoRefused, Unreachable
from tests.unit.sshd_fake import FakeSshd

KEY = paramiko.ECDSAKey.generate()
OTHER = paramiko.ECDSAKey.generate()


@pytest.fixture
def sshd() -> Iterator[FakeSshd]:
    server = FakeSshd(KEY)
    yield server
    server.close()


def spec(port: int, *, user: str = "pi", host_key: str | None = None) -> HostSpec:
    return HostSpec(name="h1", role="pi", address="127.0.0.1", port=port, user=user, key=None, password_file=None,
                    sudo_password_file=None, host_key=host_key, connect_timeout=5)


def remote(port: int, known: Path, *, accept_new: bool = False, user: str = "pi", host_key: str | None = None,
           login: str | None = "login", sudo: str | None = None, key: Path | None = None) -> Remote:
    host = spec(port, user=user, host_key=host_key)
    if key is not None:
        import dataclasses
        host = dataclasses.replace(host, key=key)
    return Remote(host, known, Credentials(login, sudo), accept_new_host_keys=accept_new)


def line(port: int, key: paramiko.PKey) -> str:
    return f"[127.0.0.1]:{port} {key.get_name()} {key.get_base64()}\n"


# ----------------------------------------------------------------------------------------------- host keys


def test_unknown_host_key_is_refused_and_nothing_recorded(sshd: FakeSshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    with pytest.raises(HostKeyRefused, match=r"^unknown host key for \[127.0.0.1\]:\d+: ecdsa-sha2-nistp256 SHA256:") as exc:
        remote(sshd.port, known).run("true")
    assert "--accept-new-host-keys" in str(exc.value) and "ssh_host_ecdsa_key.pub" in str(exc.value)
    assert not known.exists()
    assert sshd.commands == []  # nothing ran on a host we do not know


def test_accept_new_records_the_key_then_it_is_known(sshd: FakeSshd, tmp_path: Path) -> None:
    known = tmp_path / "sub" / "known_hosts"
    assert remote(sshd.port, known, accept_new=True).run("echo hi", sudo=False).stdout == "hi\n"
    assert known.read_text() == line(sshd.port, KEY)
    assert remote(sshd.port, known).run("echo again", sudo=False).stdout == "again\n"  # known now: no flag needed
    assert known.read_text() == line(sshd.port, KEY)  # recorded once


@pytest.mark.parametrize("accept_new", [False, True])
def test_changed_host_key_is_refused_even_with_accept_new(sshd: FakeSshd, tmp_path: Path, accept_new: bool) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(line(sshd.port, OTHER))
    with pytest.raises(HostKeyRefused, match="CHANGED") as exc:
        remote(sshd.port, known, accept_new=accept_new).run("true")
    assert hostkeys.fingerprint(KEY) in str(exc.value) and hostkeys.fingerprint(OTHER) in str(exc.value)
    assert "ssh-keygen -R" in str(exc.value)
    assert known.read_text() == line(sshd.port, OTHER)
    assert sshd.commands == []


def test_a_pin_alone_decides(sshd: FakeSshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(line(sshd.port, OTHER))  # ignored: the inventory pins the host key
    pin = f"{KEY.get_name()} {KEY.get_base64()}"
    assert remote(sshd.port, known, host_key=pin).run("echo pinned", sudo=False).stdout == "pinned\n"
    wrong = f"{OTHER.get_name()} {OTHER.get_base64()}"
    with pytest.raises(HostKeyRefused, match="CHANGED.*update host_key of h1 in the inventory"):
        remote(sshd.port, tmp_path / "none", host_key=wrong, accept_new=True).run("true")
    assert not (tmp_path / "none").exists()
    known.write_text(line(sshd.port, KEY))  # known_hosts lists the key the host shows: the pin still decides
    with pytest.raises(HostKeyRefused, match="CHANGED.*update host_key of h1 in the inventory"):
        remote(sshd.port, known, host_key=wrong).run("true")
    assert len(sshd.commands) == 1  # the first run's alone: nothing ran where the pin was refused


def test_check_policy_alone(tmp_path: Path) -> None:
    known = tmp_path / "d" / "kh"
    with pytest.raises(HostKeyRefused):
        CheckPolicy(known, accept_new=False).missing_host_key(paramiko.SSHClient(), "host", KEY)
    assert not known.exists()
    CheckPolicy(known, accept_new=True).missing_host_key(paramiko.SSHClient(), "host", KEY)
    CheckPolicy(known, accept_new=True).missing_host_key(paramiko.SSHClient(), "other", OTHER)
    assert known.read_text() == f"host {KEY.get_name()} {KEY.get_base64()}\nother {OTHER.get_name()} {OTHER.get_base64()}\n"


def test_known_name_and_fingerprint() -> None:
    assert hostkeys.known_name("10.0.0.1", 22) == "10.0.0.1"
    assert hostkeys.known_name("10.0.0.1", 2222) == "[10.0.0.1]:2222"
    assert hostkeys.fingerprint(KEY).startswith("SHA256:") and not hostkeys.fingerprint(KEY).endswith("=")
    assert hostkeys.fingerprint(KEY) != hostkeys.fingerprint(OTHER)
    assert len(hostkeys.fingerprint(KEY)) == len("SHA256:") + 43


def test_configure_forgets_other_known_hosts(tmp_path: Path) -> None:
    client = paramiko.SSHClient()
    client.get_host_keys().add("x", KEY.get_name(), KEY)
    client._system_host_keys.add("y", KEY.get_name(), KEY)  # type: ignore[attr-defined]
    hostkeys.configure(client, known_hosts=tmp_path / "absent", name="h", pinned=None, accept_new=False)
    assert len(client.get_host_keys()) == 0 and len(client._system_host_keys) == 0  # type: ignore[attr-defined]
    assert isinstance(client._policy, CheckPolicy) and not client._policy.accept_new  # type: ignore[attr-defined]
    hostkeys.configure(client, known_hosts=tmp_path / "absent", name="h", pinned=f"{KEY.get_name()} {KEY.get_base64()}",
                       accept_new=True)
    assert isinstance(client._policy, paramiko.RejectPolicy)  # type: ignore[attr-defined]
    assert client.get_host_keys().lookup("h") is not None


# ----------------------------------------------------------------------------------------------------- sudo


@pytest.fixture
def known(sshd: FakeSshd, tmp_path: Path) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(line(sshd.port, KEY))
    return path


def test_sudo_refused_is_raised_with_the_fix(sshd: FakeSshd, known: Path) -> None:
    sshd.sudo = "refuse"
    with pytest.raises(SudoRefused, match="h1: sudo wants a password: set sudo_password_file"):
        remote(sshd.port, known).run("touch /nonexistent/never")
    assert sshd.commands[-1].startswith("sudo -n sh -c ")


def test_wrong_sudo_password_is_raised(sshd: FakeSshd, known: Path) -> None:
    sshd.sudo = "password"
    with pytest.raises(SudoRefused, match="h1: the sudo password was not accepted"):
        remote(sshd.port, known, sudo="wrong").run("true")


def test_sudo_password_goes_on_stdin_never_on_the_command_line(sshd: FakeSshd, known: Path) -> None:
    sshd.sudo = "password"
    result = remote(sshd.port, known, sudo="sudo-pw").run("echo as-root; echo oops >&2; exit 3")
    assert (result.rc, result.stdout, result.stderr, result.ok) == (3, "as-root\n", "oops\n", False)
    assert sshd.commands[-1].startswith("sudo -k -S -p '' sh -c ")
    assert "sudo-pw" not in sshd.commands[-1] and "as-root" not in sshd.commands[-1]


def test_a_failing_script_is_not_a_sudo_refusal(sshd: FakeSshd, known: Path) -> None:
    result = remote(sshd.port, known).run("echo 'no such file' >&2; exit 1")
    assert not result.ok and result.stderr == "no such file\n"


@pytest.mark.parametrize("user, sudo, starts", [("root", True, "sh -c "), ("pi", False, "sh -c "),
                                                 ("pi", True, "sudo -n sh -c ")])
def test_sudo_only_when_needed(sshd: FakeSshd, known: Path, user: str, sudo: bool, starts: str) -> None:
    sshd.sudo = "refuse"  # so any sudo at all would fail
    r = remote(sshd.port, known, user=user)
    if starts.startswith("sudo"):
        with pytest.raises(SudoRefused):
            r.run("true", sudo=sudo)
    else:
        assert r.run("echo fine", sudo=sudo).stdout == "fine\n"
    assert sshd.commands[-1].startswith(starts)


# ------------------------------------------------------------------------------------------ runs, logins


def test_each_run_is_one_counted_round_trip_on_one_connection(sshd: FakeSshd, known: Path) -> None:
    r = remote(sshd.port, known)
    big = "x" * 300000
    both = r.run(f"printf %s {big}; printf %s {big} >&2")
    assert both.stdout == big and both.stderr == big  # both streams drained whole, no deadlock
    assert r.run("read line || echo no-stdin", sudo=False).stdout == "no-stdin\n"  # the script has no stdin
    assert r.round_trips == 2 and len(sshd._transports) == 1
    r.close()
    assert r.run("echo reopened").stdout == "reopened\n" and len(sshd._transports) == 2 and r.round_trips == 3
    r.close()
    r.close()


def test_login_refused_and_nothing_listening_are_unreachable(sshd: FakeSshd, known: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(known.parent))  # no ~/.ssh/id_* of whoever runs the tests
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # nor their agent's keys
    with pytest.raises(Unreachable, match=r"pi@127.0.0.1:\d+: login refused \(tried password; current Raspberry Pi OS images have no `pi` user: set `user:`"):
        remote(sshd.port, known, login="wrong").run("true")
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()  # nothing listens there
    with pytest.raises(Unreachable, match=f"pi@127.0.0.1:{port}: connection refused: nothing listens on port {port} "):
        remote(port, known).run("true")


def test_fresh_login(sshd: FakeSshd, known: Path) -> None:
    r = remote(sshd.port, known)
    assert r.can_log_in_fresh(within=0)
    assert sshd.commands[-1] == "true"
    assert not r.can_log_in_fresh(use_password=False, within=0)  # no key, and the password not used
    assert not remote(sshd.port, known, login="wrong").can_log_in_fresh(within=0.5)


def test_credentials_repr_never_shows_secrets() -> None:
    text = repr(Credentials("login-secret", None))
    assert text == "Credentials(login_password=<hidden>, sudo_password=None)"


def test_the_hint_names_the_key_file_of_each_type(tmp_path: Path) -> None:
    rsa = paramiko.RSAKey.generate(1024)
    line = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    ed = paramiko.Ed25519Key(filename=str(tmp_path / "k"))
    for key, short in ((rsa, "rsa"), (ed, "ed25519"), (KEY, "ecdsa")):
        with pytest.raises(HostKeyRefused) as exc:
            CheckPolicy(tmp_path / "kh", accept_new=False).missing_host_key(paramiko.SSHClient(), "h", key)
        assert str(exc.value) == (
            f"unknown host key for h: {key.get_name()} {hostkeys.fingerprint(key)}. Check it out of band (on the host: "
            f"ssh-keygen -lf /etc/ssh/ssh_host_{short}_key.pub), then rerun with --accept-new-host-keys to record it "
            f"in {tmp_path / 'kh'}, or pin it as host_key in the inventory")
    assert line.returncode == 0


def test_accept_new_makes_the_known_hosts_directories(tmp_path: Path) -> None:
    known = tmp_path / "a" / "b" / "kh"
    CheckPolicy(known, accept_new=True).missing_host_key(paramiko.SSHClient(), "h", KEY)
    assert known.read_text() == f"h {KEY.get_name()} {KEY.get_base64()}\n"


def test_output_that_is_not_utf8_is_replaced_not_fatal(sshd: FakeSshd, known: Path) -> None:
    result = remote(sshd.port, known).run("printf 'a\\377b'; printf 'c\\376d' >&2")
    assert (result.stdout, result.stderr) == ("a\ufffdb", "c\ufffdd")


def test_fresh_login_is_retried_until_the_host_lets_us_in(sshd: FakeSshd, known: Path) -> None:
    import threading
    sshd.login_password = "not yet"
    threading.Timer(0.5, lambda: setattr(sshd, "login_password", "login")).start()
    assert remote(sshd.port, known).can_log_in_fresh(within=5)


@pytest.mark.parametrize("stderr", ["sudo: a password is required", "sudo: 1 incorrect password attempt",
                                    "Sorry, try again.", "sudo: a terminal is required to read the password"])
def test_what_sudo_says_when_it_refuses(stderr: str) -> None:
    assert remote_module._sudo_refused(f"something\n{stderr}\n")
    assert not remote_module._sudo_refused("sh: 1: no: not found\n")


def test_a_login_that_cannot_run_a_command_is_not_a_working_login(sshd: FakeSshd, known: Path) -> None:
    sshd.allow_sessions = False
    assert not remote(sshd.port, known).can_log_in_fresh(within=0)
    with pytest.raises(Unreachable, match="h1: connection lost: "):
        remote(sshd.port, known).run("true")


def test_a_key_login_as_the_inventorys_user(sshd: FakeSshd, known: Path, tmp_path: Path) -> None:
    client = paramiko.ECDSAKey.generate()
    client.write_private_key_file(str(tmp_path / "id"))
    sshd.client_key = client
    r = remote(sshd.port, known, login=None, key=tmp_path / "id", user="alice")
    assert r.run("echo by key", sudo=False).stdout == "by key\n"
    assert set(sshd.users) == {"alice"}
    assert r.can_log_in_fresh(use_password=False, within=5)  # retried: a loaded machine may be slow to answer


def test_why_a_run_or_a_connection_failed_is_said(sshd: FakeSshd, known: Path) -> None:
    sshd.allow_sessions = False
    with pytest.raises(Unreachable) as exc:
        remote(sshd.port, known).run("true")
    assert str(exc.value).startswith("h1: connection lost: ") and "prohibited" in str(exc.value)


# ----------------------------------------------------------------------------------------------- day two (issue 15)
def test_a_second_known_key_of_the_same_type_is_accepted(sshd: FakeSshd, tmp_path: Path) -> None:
    """known_hosts may list several keys for a host (as during rotate-vps-hostkey); OpenSSH takes any of
    them, and so does pitunnel, although paramiko compares only the first of each type."""
    known = tmp_path / "known_hosts"
    known.write_text(line(sshd.port, OTHER) + line(sshd.port, KEY))
    assert remote(sshd.port, known).run("echo both", sudo=False).stdout == "both\n"
    assert known.read_text() == line(sshd.port, OTHER) + line(sshd.port, KEY)


def test_accept_changed_host_key_takes_only_the_named_key(sshd: FakeSshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHva6ee4ekTAawH0SqI5CoAvuEvPaN4hfyg5Q+vEb9p1\n"
                     + line(sshd.port, OTHER))
    before = known.read_text()
    wrong = remote(sshd.port, known)
    wrong.accept_changed_host_key = hostkeys.fingerprint(OTHER)
    with pytest.raises(HostKeyRefused) as refused:
        wrong.run("true")
    assert str(refused.value).endswith(
        f"CHANGED to {KEY.get_name()} {hostkeys.fingerprint(KEY)}, and none of its keys is the --accept-changed-host-key "
        f"{hostkeys.fingerprint(OTHER)}: refused, known_hosts unchanged. Read the fingerprint again on the provider's "
        "console (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub)"), refused.value
    assert known.read_text() == before and sshd.commands == []
    seen: list[tuple[str, str, str, str]] = []
    right = remote(sshd.port, known)
    right.accept_changed_host_key, right.on_change = hostkeys.fingerprint(KEY), lambda *a: seen.append(a)
    assert right.run("echo taken", sudo=False).stdout == "taken\n"
    assert known.read_text() == before.splitlines(keepends=True)[0] + line(sshd.port, KEY), "old line replaced"
    assert seen == [("h1", "changed", f"host key in {known}",
                     f"now {KEY.get_name()} {hostkeys.fingerprint(KEY)} (--accept-changed-host-key); the old keys of "
                     f"[127.0.0.1]:{sshd.port} removed")]


def test_a_changed_key_names_the_flag_that_takes_it(sshd: FakeSshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(line(sshd.port, OTHER))
    with pytest.raises(HostKeyRefused) as refused:
        remote(sshd.port, known).run("true")
    assert str(refused.value) == (
        f"host key for pi@127.0.0.1:{sshd.port} CHANGED: got {KEY.get_name()} "
        f"{hostkeys.fingerprint(KEY)}, expected {hostkeys.fingerprint(OTHER)} (known as [127.0.0.1]:{sshd.port}). "
        "This may be an attack; if the host was really reinstalled, check the new key's fingerprint on the host's console "
        f"(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and rerun with --accept-changed-host-key "
        f"{hostkeys.fingerprint(KEY)} if it is the same, or remove its old line from {known} (ssh-keygen -R) "
        "(docs/troubleshooting.md)")


# ------------------------------------------------------------------------------- @revoked, @cert-authority


def revoked(hosts: str, key: paramiko.PKey) -> str:
    return f"@revoked {hosts} {key.get_name()} {key.get_base64()}\n"


@pytest.mark.parametrize(("before", "hosts"), [
    ("known too", "[127.0.0.1]:{port}"),  # also listed as a normal known key: still refused, as OpenSSH does
    ("known too", "*"),  # revoked for every host
    ("other key known", "[127.0.0.1]:*,other.example"),  # the host has another known key
    ("nothing else", "[127.0.0.1]:{port}"),  # the revoked line alone
])
def test_a_revoked_host_key_is_refused_before_anything_is_sent(sshd: FakeSshd, tmp_path: Path, before: str,
                                                                hosts: str) -> None:
    known = tmp_path / "known_hosts"
    others = {"known too": line(sshd.port, KEY), "other key known": line(sshd.port, OTHER), "nothing else": ""}[before]
    known.write_text(others + revoked(hosts.format(port=sshd.port), KEY))
    text = known.read_text()
    for accept_new in (False, True):
        with pytest.raises(HostKeyRefused) as exc:
            remote(sshd.port, known, accept_new=accept_new).run("true")
        message = str(exc.value)
        assert "\n" not in message and f"REVOKED" in message and hostkeys.fingerprint(KEY) in message, message
        assert f"{known}:{len(text.splitlines())}" in message and "@revoked" in message, message
    changed = remote(sshd.port, known)
    changed.accept_changed_host_key = hostkeys.fingerprint(KEY)  # not even when vouched for as a changed key
    with pytest.raises(HostKeyRefused, match="REVOKED"):
        changed.run("true")
    pinned = remote(sshd.port, known, host_key=f"{KEY.get_name()} {KEY.get_base64()}")  # nor pinned
    with pytest.raises(HostKeyRefused, match="REVOKED"):
        pinned.run("true")
    assert known.read_text() == text and sshd.commands == [] and sshd.users == []  # nothing recorded, nothing sent


def test_a_revoked_line_for_another_host_or_key_changes_nothing(sshd: FakeSshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(line(sshd.port, KEY) + revoked("other.example,[127.0.0.1]:1", KEY)
                     + revoked(f"[127.0.0.1]:{sshd.port}", OTHER) + revoked(f"*,![127.0.0.1]:{sshd.port}", KEY))
    assert remote(sshd.port, known).run("echo fine", sudo=False).stdout == "fine\n"


def test_a_cert_authority_line_is_no_known_key(sshd: FakeSshd, tmp_path: Path) -> None:
    """`@cert-authority` names a CA that signs host certificates (pitunnel does not check certificates): the
    CA's key is never taken for the host's own key, whatever the line's pattern."""
    known = tmp_path / "known_hosts"
    known.write_text(f"@cert-authority [127.0.0.1]:{sshd.port} {KEY.get_name()} {KEY.get_base64()}\n"
                     f"@cert-authority * {KEY.get_name()} {KEY.get_base64()}\n")
    with pytest.raises(HostKeyRefused, match="unknown host key"):
        remote(sshd.port, known).run("true")
    assert sshd.commands == []
    assert not hostkeys.listed(known, f"[127.0.0.1]:{sshd.port}", KEY)


def test_a_host_that_cannot_store_the_script_fails_with_its_own_error_and_a_hint(
        sshd: FakeSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real sh runs the receiver with mktemp's directory read-only (the fake sshd's commands inherit TMPDIR):
    nothing of the script runs, and the error is the host's own, not a pitunnel bug (issue 24)."""
    known = tmp_path / "known_hosts"
    known.write_text(line(sshd.port, KEY))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "no such dir"))
    with pytest.raises(remote_module.HostCannotRun) as exc:
        remote(sshd.port, known).run(f"touch {tmp_path}/ran", sudo=False)
    assert re.fullmatch(r"h1 cannot run a script: mktemp: failed to create file via template .*no such dir/tmp\.X+.: "
                        r"No such file or directory \(is / read-only or /tmp full on h1\?\)", str(exc.value)), exc.value
    assert not (tmp_path / "ran").exists()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    done = remote(sshd.port, known).run("echo fine; exit 125", sudo=False)  # a script's own 125 is its business
    assert (done.rc, done.stdout) == (125, "fine\n")


def test_after_its_path_restarts_a_link_retries_until_the_host_answers_again(tmp_path: Path) -> None:
    """A Pi's own tunnel restarted under our connection (provision-pi restarts its unit): the connection is dropped
    and the next use keeps trying for `within` seconds, where a host that could not be reached is tried once."""
    first = FakeSshd(KEY)
    port = first.port
    known = tmp_path / "known_hosts"
    known.write_text(line(port, KEY))
    host = remote(port, known)
    assert host.run("echo before", sudo=False).stdout == "before\n"
    first.close()
    started = time.monotonic()
    host.path_restarts(0.3, within=8.0)
    assert time.monotonic() - started >= 0.3  # it waited for the restart to begin
    back: list[FakeSshd] = []
    timer = threading.Timer(1.0, lambda: back.append(FakeSshd(KEY, port=port)))
    timer.start()
    try:
        assert host.run("echo after", sudo=False).stdout == "after\n"  # refused at first, then answered
        assert time.monotonic() - started >= 1.0
    finally:
        timer.join()
        host.close()
        for server in back:
            server.close()


def test_a_host_not_reached_is_not_tried_again_in_the_run(tmp_path: Path) -> None:
    gone = FakeSshd(KEY)
    port = gone.port
    gone.close()
    host = remote(port, tmp_path / "known_hosts")
    with pytest.raises(Unreachable, match="connection refused"):
        host.run("true", sudo=False)
    later = FakeSshd(KEY, port=port)
    try:
        with pytest.raises(Unreachable, match="connection refused"):  # the first answer stands for the run
            host.run("true", sudo=False)
        assert later.users == []
    finally:
        later.close()


def test_a_key_proof_is_retried_while_the_host_does_not_answer_and_a_refusal_is_final(tmp_path: Path) -> None:
    key_file = tmp_path / "id_new"
    key = paramiko.ECDSAKey.generate()
    key.write_private_key_file(str(key_file))
    first = FakeSshd(KEY)
    port = first.port
    first.close()
    known = tmp_path / "known_hosts"
    known.write_text(line(port, KEY))
    host = remote(port, known)
    started = time.monotonic()
    why = host.proves_key(key_file, within=0.8)  # nobody answers: tried again and again, then why
    assert why is not None and "connection refused" in why and time.monotonic() - started >= 0.8
    back: list[FakeSshd] = []

    def restart() -> None:
        server = FakeSshd(KEY, port=port)
        server.client_key = key
        back.append(server)

    timer = threading.Timer(0.8, restart)
    timer.start()
    try:
        assert host.proves_key(key_file, within=8) is None  # refused connections at first, then the key let in
        assert back[0].commands == ["true"]
        back[0].client_key = None
        started = time.monotonic()
        refused = host.proves_key(key_file, within=8)
        assert refused is not None and "login refused" in refused and time.monotonic() - started < 5  # final at once
    finally:
        timer.join()
        for server in back:
            server.close()


@pytest.mark.parametrize(("error", "said"), [
    ("sh: 1: cannot create /tmp/x: Read-only file system\n", "sh: 1: cannot create /tmp/x: Read-only file system"),
    ("first\nsecond\nthird\n", "second third"),  # its last two lines, on one
    ("  \n", "no error output"),
    ("x" * 400, "x" * 300),  # at most 300 characters of it
])
def test_a_host_that_cannot_run_a_script_is_said_with_its_own_last_words(error: str, said: str) -> None:
    assert str(remote_module.HostCannotRun("pi1", error)) == \
        f"pi1 cannot run a script: {said} (is / read-only or /tmp full on pi1?)"
    assert str(remote_module.HostCannotRun("pi1", error, "cannot store a file")).startswith(
        f"pi1 cannot store a file: {said} (")


def test_a_host_key_alias_from_the_ssh_config_is_the_name_its_key_is_checked_under(sshd: FakeSshd,
                                                                                     tmp_path: Path) -> None:
    """OpenSSH files a HostKeyAlias's key under the bare alias (no port): so does pitunnel, whatever the port."""
    import dataclasses

    from pitunnel import sshconf

    config = tmp_path / "ssh_config"
    config.write_text(f"Host aliased\n  HostName 127.0.0.1\n  Port {sshd.port}\n  HostKeyAlias pi-home\n")
    host = dataclasses.replace(spec(22), address="aliased", given=frozenset({"address"}))
    known = tmp_path / "known_hosts"
    known.write_text(f"pi-home {KEY.get_name()} {KEY.get_base64()}\n")
    aliased = Remote(host, known, Credentials("login"), route=sshconf.resolve(host, sshconf.load(config)))
    assert aliased.run("echo aliased", sudo=False).stdout == "aliased\n"
    known.write_text(f"[127.0.0.1]:{sshd.port} {KEY.get_name()} {KEY.get_base64()}\n")  # under its address alone
    with pytest.raises(HostKeyRefused, match="unknown host key for pi-home"):
        Remote(host, known, Credentials("login"), route=sshconf.resolve(host, sshconf.load(config))).run("true")


def test_a_proxyjump_chain_of_the_ssh_config_is_followed_hop_by_hop_each_key_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ProxyJump j1,j2`: a TCP connection to j1, a login there (its own user and key, no password), a channel
    from j1 to j2, a login on j2, a channel from j2 to the host; every hop's host key checked under its name."""
    import dataclasses

    from pitunnel import sshconf

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    j1, j2, target = FakeSshd(paramiko.ECDSAKey.generate()), FakeSshd(paramiko.ECDSAKey.generate()), FakeSshd(KEY)
    hop_key = paramiko.ECDSAKey.generate()
    hop_key.write_private_key_file(str(tmp_path / "hop_key"))
    for jump in (j1, j2):
        jump.forwarding, jump.client_key = True, hop_key
    config = tmp_path / "ssh_config"
    config.write_text(f"Host target\n  HostName 127.0.0.1\n  Port {target.port}\n  ProxyJump j1,j2\n" + "".join(
        f"Host {name}\n  HostName 127.0.0.1\n  Port {jump.port}\n  User hopper\n  IdentityFile {tmp_path / 'hop_key'}\n"
        "  IdentitiesOnly yes\n" for name, jump in (("j1", j1), ("j2", j2))))
    known = tmp_path / "known_hosts"
    known.write_text("".join(line(s.port, s.host_key) for s in (j1, j2, target)))
    host = dataclasses.replace(spec(22), address="target", given=frozenset({"address"}))

    def through() -> Remote:
        return Remote(host, known, Credentials("login"), route=sshconf.resolve(host, sshconf.load(config)))

    try:
        chained = through()
        assert chained.run("echo through two", sudo=False).stdout == "through two\n"
        chained.close()
        assert [d for _, d in j1.forwarded] == [("127.0.0.1", j2.port)]  # j1 opened the way to j2 only
        assert [d for _, d in j2.forwarded] == [("127.0.0.1", target.port)]
        assert (j1.users, j2.users, target.users) == (["hopper"], ["hopper"], ["pi"])  # jumps by key, no password
        known.write_text("".join(line(s.port, k) for s, k in ((j1, j1.host_key), (j2, OTHER), (target, KEY))))
        with pytest.raises(HostKeyRefused) as refused:
            through().run("true", sudo=False)
        assert str(refused.value).startswith(
            f"host key for hopper@127.0.0.1:{j2.port} (jump host for h1) CHANGED: got {j2.host_key.get_name()} "
            f"{hostkeys.fingerprint(j2.host_key)}, expected {hostkeys.fingerprint(OTHER)}"), refused.value
        assert len(target.commands) == 1  # the refused run never reached the host
    finally:
        for server in (j1, j2, target):
            server.close()


def test_a_connection_the_host_dropped_is_opened_again_for_the_next_run(sshd: FakeSshd, known: Path) -> None:
    """The host ended our connection between two runs (sshd restarted, a NAT forgot it): the next run logs in
    again instead of failing on the dead one."""
    host = remote(sshd.port, known)
    assert host.run("echo one", sudo=False).stdout == "one\n"
    dropped = host.connection().client.get_transport()
    assert dropped is not None
    for transport in sshd._transports:
        transport.close()
    deadline = time.monotonic() + 5
    while dropped.is_active() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not dropped.is_active()
    assert host.run("echo two", sudo=False).stdout == "two\n"
    assert len(sshd._transports) == 2 and host.round_trips == 2
    host.close()


def test_a_host_that_never_reads_the_script_fails_the_run_within_its_timeout(
        sshd: FakeSshd, known: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host whose command never reads its stdin (a wedged shell) cannot hang the run while the script is sent:
    once the channel's window is full, the run's timeout ends it, and says so."""
    monkeypatch.setattr(sshd, "_exec", lambda chan, command: None)  # takes the command, reads nothing, ever
    host = remote(sshd.port, known)
    failed = failure_within(lambda: host.run("#" * 3_000_000, sudo=False, timeout=0.5), 10,  # > the window (2 MiB)
                            "the run still waits to send its script, long past its timeout (0.5s)")
    assert isinstance(failed, Unreachable) and str(failed).startswith("h1: connection lost:")
    host.close()


def failure_within(call: Callable[[], object], seconds: float, still_waiting: str) -> Exception:
    """What `call` raised, in a thread given `seconds` (a call that hangs fails the test with `still_waiting`)."""
    failed: list[Exception] = []

    def attempt() -> None:
        try:
            call()
        except Exception as exc:  # noqa: BLE001  (the test checks what it was)
            failed.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    assert not worker.is_alive(), still_waiting
    assert len(failed) == 1, "it did not fail"
    return failed[0]


@pytest.mark.parametrize("text", ["it's", "'", "''", "a 'b' c", "$HOME `id` \\ \"x\"", remote_module.RECEIVER])
def test_a_quoted_text_is_read_back_by_sh_as_itself(text: str) -> None:
    done = subprocess.run(["sh", "-c", "printf %s " + remote_module._quote(text)], capture_output=True, text=True,
                          check=True, timeout=10)
    assert done.stdout == text


def test_a_script_that_runs_past_the_runs_timeout_fails_it_at_the_timeout(sshd: FakeSshd, known: Path) -> None:
    """The run's timeout bounds the whole script, not only sending it: a command that hangs on the host (an apt
    lock, a wedged mount) ends the run at the timeout with what happened, and the connection serves the next."""
    host = remote(sshd.port, known)
    started = time.monotonic()
    with pytest.raises(Unreachable) as failed:
        host.run("sleep 3; echo done", sudo=False, timeout=0.5)
    assert time.monotonic() - started < 2, "the run waited for the script, past its timeout"
    assert str(failed.value) == "h1: no end to its script within 0.5s (a command hung, or the connection did)"
    assert host.run("echo next", sudo=False).stdout == "next\n"
    host.close()
