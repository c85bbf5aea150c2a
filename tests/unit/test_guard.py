"""The lock-out guard's commit-confirm (issue 11, row 2) and root's writes next to planted links (row 8),
run for real: the runner's scripts and the planned commands go to a local `sh` on files under tmp_path.
The host's rollback timer is played by a background `sleep; sh RECORD` (systemd-run needs systemd)."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pitunnel import guard, runner
from pitunnel.facts import gather
from pitunnel.guard import pending_record
from pitunnel.ops import Directory, File, Handler, KeyPair, shell
from pitunnel.remote import Result, Unreachable
from pitunnel.report import Reporter
from pitunnel.runner import Mode, StepFailed, converge
from tests.unit.test_ops import LocalShell, apply, me


class LocalRemote:
    """Remote's run(), on this machine: each script in its own `sh`, counted."""

    name = "local"

    def __init__(self) -> None:
        self.scripts: list[str] = []

    def run(self, script: str) -> Result:
        self.scripts.append(script)
        done = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, check=False)
        return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Backups and pending records under tmp_path; the timer is a background sleep that runs the record."""
    for module in (shell, guard):  # the backups (shell.py) and the pending records beside them (guard.py)
        monkeypatch.setattr(module, "BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setattr(guard, "TIMER_COMMAND", "(sleep {seconds}; sh {record}) 9>&- </dev/null >/dev/null 2>&1 &")
    # the real command's shape, with each systemctl failing as it does when no such unit is loaded
    monkeypatch.setattr(guard, "DISARM_COMMAND", guard.DISARM_COMMAND.replace("systemctl", "false"))
    return tmp_path


def guarded(checks: list[bool], seconds: float = 60, name: str = "reload sshd") -> Handler:
    """A guarded handler whose check answers `checks` in turn (and counts its runs in checks' length)."""
    answers = iter(checks)
    return Handler(name, ["true"], verify=lambda: next(answers), verify_hint="a fresh login failed",
                   confirm_seconds=seconds)


def dropin(path: Path, content: str) -> File:
    owner, group = me()
    return File(str(path), content, owner=owner, group=group, mode=0o644, validate="true", notify=("reload sshd",))


def output(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out


def cut_after_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """The laptop's connection dies right after the apply script ran: files written, no handler, no check."""
    real = runner._apply

    def apply_then_cut(remote: object, scripts: list[list[str]]) -> tuple[int, str] | None:
        real(remote, scripts)  # type: ignore[arg-type]
        raise Unreachable("local: connection lost: cut by the test")

    monkeypatch.setattr(runner, "_apply", apply_then_cut)


def wait_for(condition: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


# ---------------------------------------------------------------------------
# row 2: commit-confirm


def test_proven_change_leaves_no_record_and_no_backup(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(), [guarded([True])])
    assert conf.read_text() == "new\n"
    assert not Path(pending_record("reload sshd")).exists()
    assert list((host / "backups").iterdir()) == [host / "backups" / "pending"]
    assert "handler reload sshd - ran once" in output(capsys)


def test_record_and_timer_are_armed_before_the_file_is_written(host: Path) -> None:
    conf = host / "sshd.conf"
    op = dropin(conf, "new\n")
    plan = op.plan(gather(LocalShell(), op.facts()))
    armed = runner._armed([guarded([])], [(op, plan)])
    script = "\n".join(armed[0] + plan.commands)
    assert script.index(pending_record("reload sshd")) < script.index("base64 -d > new")
    assert script.index("sleep 60") < script.index("base64 -d > new")


def test_cut_after_write_no_rerun_the_host_restores_on_its_own(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    cut_after_apply(monkeypatch)
    with pytest.raises(Unreachable):
        converge(LocalRemote(), [dropin(conf, "DenyUsers root\n")], Reporter(colour=False), Mode(),
                 [guarded([], seconds=0.3)])
    record = Path(pending_record("reload sshd"))
    assert conf.read_text() == "DenyUsers root\n" and record.exists()  # unproven, and known to be
    assert wait_for(lambda: not record.exists(), within=10), "the timer never rolled the change back"
    assert conf.read_text() == "old\n"
    assert not any(p.name != "pending" for p in (host / "backups").iterdir())


def test_cut_after_write_of_a_new_file_the_host_removes_it(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = host / "new.conf"
    cut_after_apply(monkeypatch)
    with pytest.raises(Unreachable):
        converge(LocalRemote(), [dropin(conf, "x\n")], Reporter(colour=False), Mode(), [guarded([], seconds=0.3)])
    assert conf.exists()
    assert wait_for(lambda: not conf.exists(), within=10)


@pytest.mark.parametrize("check_passes", [True, False])
def test_rerun_proves_or_rolls_back_never_already_as_wanted(host: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str],
                                                            check_passes: bool) -> None:
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    with monkeypatch.context() as cut:
        cut_after_apply(cut)
        with pytest.raises(Unreachable):
            converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(), [guarded([])])
    output(capsys)
    reporter = Reporter(colour=False)
    if check_passes:
        converge(LocalRemote(), [dropin(conf, "new\n")], reporter, Mode(), [guarded([True])])
        assert conf.read_text() == "new\n"
    else:
        with pytest.raises(StepFailed, match="earlier run's unproven change.*rolled back"):
            converge(LocalRemote(), [dropin(conf, "new\n")], reporter, Mode(), [guarded([False])])
        assert conf.read_text() == "old\n"
    out = output(capsys)
    assert "already as wanted" not in out
    if check_passes:
        assert f"changed      local      handler reload sshd - proved an earlier run's unproven change to {conf}" in out
        assert "written by an earlier run, proven now (handler reload sshd)" in out
    else:
        assert "failed       local      handler reload sshd - an earlier run's unproven change" in out
    assert not Path(pending_record("reload sshd")).exists()
    assert not any(p.name != "pending" for p in (host / "backups").iterdir())
    # and the run after that is quiet: nothing pending, nothing to do or the same change again
    again = LocalRemote()
    converge(again, [dropin(conf, conf.read_text())], Reporter(colour=False), Mode(), [guarded([])])
    assert len(again.scripts) == 1


def test_check_mode_reports_a_pending_change_and_changes_nothing(host: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    with monkeypatch.context() as cut:
        cut_after_apply(cut)
        with pytest.raises(Unreachable):
            converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(), [guarded([])])
    output(capsys)
    remote = LocalRemote()
    converge(remote, [dropin(conf, "new\n")], Reporter(colour=False), Mode(check=True), [guarded([])])
    out = output(capsys)
    assert "would change local      handler reload sshd - an earlier run left" in out
    assert "already as wanted" not in out
    assert len(remote.scripts) == 1 and Path(pending_record("reload sshd")).exists()


def test_failed_apply_clears_the_record(host: Path) -> None:
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    owner, group = me()
    bad = File(str(conf), "new\n", owner=owner, group=group, validate="false", notify=("reload sshd",))
    with pytest.raises(StepFailed, match="validation failed"):
        converge(LocalRemote(), [bad], Reporter(colour=False), Mode(), [guarded([])])
    assert conf.read_text() == "old\n"
    assert not Path(pending_record("reload sshd")).exists()


def test_timer_that_won_the_race_is_reported(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The host rolled back (its window passed) while the laptop was still checking: the run says so."""
    conf = host / "sshd.conf"
    conf.write_text("old\n")

    def slow_check() -> bool:
        time.sleep(0.1)
        subprocess.run(["sh", pending_record("reload sshd")], check=True)  # the timer fires now
        return True

    handler = Handler("reload sshd", ["true"], verify=slow_check)
    with pytest.raises(StepFailed, match="timer rolled the change back"):
        converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(), [handler])
    assert conf.read_text() == "old\n"


def test_unguarded_handler_records_nothing(host: Path) -> None:
    conf = host / "nginx.conf"
    owner, group = me()
    op = File(str(conf), "x\n", owner=owner, group=group, notify=("reload nginx",))
    remote = LocalRemote()
    converge(remote, [op], Reporter(colour=False), Mode(), [Handler("reload nginx", ["true"])])
    assert "pending" not in "".join(remote.scripts[1])
    assert not (host / "backups" / "pending").exists()


def test_every_sshd_reload_handler_is_guarded() -> None:
    """The VPS's, and the Pi's for its tunnel, passwords and teardown steps: each has a fresh-login check
    (a key login once passwords go off), declared once per role."""
    from pitunnel.roles.pi import steps as pi_steps
    from pitunnel.roles.vps import steps as vps_steps

    class Stub:
        def __init__(self) -> None:
            self.logins: list[bool] = []

        def can_log_in_fresh(self, *, use_password: bool = True, **_: object) -> bool:
            self.logins.append(use_password)
            return True

    stub = Stub()
    found = [h for h in vps_steps.handlers(stub) if h.name == "reload sshd"]  # type: ignore[arg-type]
    for step in ("tunnel", "passwords", "teardown"):
        found += [h for h in pi_steps.handlers(stub, step) if h.name == "reload sshd"]  # type: ignore[arg-type]
    assert len(found) == 4 and all(h.guarded for h in found)
    assert all(h.verify is not None and h.verify() for h in found)
    assert stub.logins == [True, True, False, True]


# ---------------------------------------------------------------------------
# row 8: root's writes in directories other accounts own


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Path]:
    """A file root must never write, chown or chmod through a link (stands in for /etc/shadow)."""
    path = tmp_path / "shadow"
    path.write_text("root:$y$secret-hash:19000:0:99999:7:::\n")
    path.chmod(0o640)
    yield path


def state(path: Path) -> tuple[str, int, int, int]:
    st = os.lstat(path)
    return path.read_text(), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def other_home(tmp_path: Path) -> Path:
    """A home directory owned by an account other than root, with its ~/.ssh, as the tunnel account has."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    if os.geteuid() == 0:
        os.chown(home, 65534, 65534)
        os.chown(home / ".ssh", 65534, 65534)
    return home


def keys_file(path: Path) -> File:
    owner, group = ("nobody", "nogroup") if os.geteuid() == 0 else me()
    return File(str(path), "ssh-ed25519 AAAA pitunnel:pi1\n", owner=owner, group=group, mode=0o600)


def run_op(op: File | Directory | KeyPair) -> tuple[str, subprocess.CompletedProcess[str]]:
    facts = gather(LocalShell(), op.facts())
    plan = op.plan(facts)
    return plan.reason, apply(plan.commands)


def test_planted_temp_name_link_is_never_followed(tmp_path: Path, victim: Path) -> None:
    home = other_home(tmp_path)
    keys = home / ".ssh" / "authorized_keys"
    keys.write_text("old\n")
    (home / ".ssh" / "authorized_keys.pitunnel-tmp").symlink_to(victim)
    before = state(victim)
    _, done = run_op(keys_file(keys))
    assert done.returncode == 0, done.stderr
    assert state(victim) == before
    assert not keys.is_symlink() and keys.read_text() == "ssh-ed25519 AAAA pitunnel:pi1\n"
    assert [p.name for p in (home / ".ssh").iterdir() if p.name.startswith(".")] == []  # temp dir gone


def test_symlinked_target_is_refused_and_never_read(tmp_path: Path, victim: Path) -> None:
    home = other_home(tmp_path)
    keys = home / ".ssh" / "authorized_keys"
    keys.symlink_to(victim)
    before = state(victim)
    op = keys_file(keys)
    facts = gather(LocalShell(), op.facts())
    assert "secret-hash" not in str(facts)  # the link's target is not read (it would show in --diff)
    plan = op.plan(facts)
    assert plan.reason == f"a symbolic link to {victim}: refused"
    done = apply(plan.commands)
    assert done.returncode != 0
    assert f"refusing to write {keys}: it is a symbolic link (to {victim})" in done.stderr
    assert state(victim) == before and keys.is_symlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the home to another account")
def test_symlinked_ssh_dir_in_another_accounts_home_is_refused(tmp_path: Path, victim: Path) -> None:
    home = other_home(tmp_path)
    (home / ".ssh").rmdir()
    root_ssh = tmp_path / "root-ssh"
    root_ssh.mkdir(mode=0o700)
    (root_ssh / "authorized_keys").write_text("ssh-ed25519 LAPTOP root@laptop\n")
    (home / ".ssh").symlink_to(root_ssh)
    os.lchown(home / ".ssh", 65534, 65534)
    before = (state(root_ssh / "authorized_keys"), os.stat(root_ssh).st_uid, stat.S_IMODE(os.stat(root_ssh).st_mode))
    for op in (Directory(str(home / ".ssh"), owner="nobody", group="nogroup", mode=0o700),
               keys_file(home / ".ssh" / "authorized_keys"),
               KeyPair(str(home / ".ssh" / "pitunnel_ed25519"), owner="nobody", comment="x")):
        _, done = run_op(op)
        assert done.returncode != 0, op.title
        assert f"{home}/.ssh is a symbolic link in a directory that nobody owns" in done.stderr
    after = (state(root_ssh / "authorized_keys"), os.stat(root_ssh).st_uid, stat.S_IMODE(os.stat(root_ssh).st_mode))
    assert after == before
    assert sorted(p.name for p in root_ssh.iterdir()) == ["authorized_keys"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a link in a root-owned directory")
def test_root_own_links_in_root_only_directories_are_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "etc-link").symlink_to(real)
    tmp_path.chmod(0o755)
    _, done = run_op(File(str(tmp_path / "etc-link" / "x.conf"), "x\n"))
    assert done.returncode == 0, done.stderr
    assert (real / "x.conf").read_text() == "x\n"


def test_directory_for_another_account_made_safely(tmp_path: Path) -> None:
    home = other_home(tmp_path)
    owner, group = ("nobody", "nogroup") if os.geteuid() == 0 else me()
    _, done = run_op(Directory(str(home / ".ssh" / "sub"), owner=owner, group=group, mode=0o700))
    assert done.returncode == 0, done.stderr
    st = os.stat(home / ".ssh" / "sub")
    assert stat.S_IMODE(st.st_mode) == 0o700 and (os.geteuid() != 0 or st.st_uid == 65534)
    assert not Directory(str(home / ".ssh" / "sub"), owner=owner, group=group, mode=0o700).plan(
        gather(LocalShell(), Directory(str(home / ".ssh" / "sub"), owner=owner, group=group, mode=0o700).facts())).changes


# ---------------------------------------------------------------------------
# row 2, what the host sees: its timers, its lock, its private records, the rollback script's own output


@pytest.fixture
def timers(host: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """systemd's transient timers as files: `units/<unit>` is a loaded timer, `ledger` every start and stop asked
    for; as systemd-run does, starting a unit already loaded is refused. Returns the ledger."""
    units, ledger = host / "units", host / "ledger"
    units.mkdir()
    ledger.touch()
    monkeypatch.setattr(guard, "TIMER_COMMAND", (
        f"if [ -e {units}/{{unit}} ]; then echo \"Unit {{unit}}.timer already exists.\" >&2; false; "
        f"else echo {{seconds}} > {units}/{{unit}}; echo \"arm {{unit}} {{seconds}}\" >> {ledger}; fi"))
    monkeypatch.setattr(guard, "DISARM_COMMAND", f"echo \"stop {{unit}}\" >> {ledger}; rm -f {units}/{{unit}}")
    return ledger


def loaded(host: Path) -> list[str]:
    return sorted(p.name for p in (host / "units").iterdir())


UNIT = "pitunnel-confirm-reload-sshd"


def test_the_timer_is_armed_before_the_write_rearmed_for_the_check_and_stopped_once_proven(
        host: Path, timers: Path) -> None:
    """Each arming first stops the handler's own timer (systemd refuses a unit already loaded), so the check gets
    a full window of its own; the proof stops that same timer: none is left to fire on a proven change."""
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(), [guarded([True], seconds=45)])
    assert timers.read_text().splitlines() == [f"stop {UNIT}", f"arm {UNIT} 45",  # before the write
                                               f"stop {UNIT}", f"arm {UNIT} 45",  # before the handler and its check
                                               f"stop {UNIT}"]  # proven
    assert loaded(host) == [] and conf.read_text() == "new\n"


def test_a_timer_left_loaded_by_an_earlier_run_does_not_stop_the_next_one(host: Path, timers: Path) -> None:
    """A unit still loaded (a timer that fired and failed stays loaded) is stopped before the new one starts."""
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    (host / "units" / UNIT).write_text("120\n")
    converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(), [guarded([True])])
    assert conf.read_text() == "new\n" and loaded(host) == []


def test_a_failed_apply_stops_the_timer_it_armed(host: Path, timers: Path) -> None:
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    owner, group = me()
    bad = File(str(host / "other.conf"), "x\n", owner=owner, group=group, validate="false")
    with pytest.raises(StepFailed, match="validation failed"):
        converge(LocalRemote(), [dropin(conf, "new\n"), bad], Reporter(colour=False), Mode(), [guarded([])])
    assert timers.read_text().splitlines()[-1] == f"stop {UNIT}"
    assert loaded(host) == [] and conf.read_text() == "old\n"


def test_an_apply_that_fails_before_the_guarded_write_touches_no_timer_or_record(host: Path, timers: Path) -> None:
    """Nothing was armed: the run sends nothing after its failed apply, so it can stop no timer and drop no
    record (another run's, in its window)."""
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    owner, group = me()
    bad = File(str(host / "other.conf"), "x\n", owner=owner, group=group, validate="false")
    remote = LocalRemote()
    with pytest.raises(StepFailed, match="validation failed"):
        converge(remote, [bad, dropin(conf, "new\n")], Reporter(colour=False), Mode(), [guarded([])])
    assert len(remote.scripts) == 2  # the read, the apply
    assert timers.read_text() == "" and conf.read_text() == "old\n"


def test_a_failed_step_without_a_guarded_handler_makes_no_pending_records(host: Path) -> None:
    """The clean-up of a failed apply takes the records' lock only when this run armed one."""
    a = host / "nginx.conf"
    a.write_text("old\n")
    owner, group = me()
    ops = [File(str(a), "new\n", owner=owner, group=group, notify=("reload nginx",)),
           File(str(host / "b.conf"), "x\n", owner=owner, group=group, validate="false")]
    with pytest.raises(StepFailed, match="validation failed"):
        converge(LocalRemote(), ops, Reporter(colour=False), Mode(), [Handler("reload nginx", ["true"])])
    assert a.read_text() == "old\n"
    assert not (host / "backups" / "pending").exists()


def test_the_pending_records_are_private_to_root(host: Path) -> None:
    """A record is a script the host's timer runs as root: its directory, and the backups', are made 700."""
    conf = host / "sshd.conf"
    cut = LocalRemote()
    real = runner._apply
    seen: list[int] = []

    def apply_then_look(remote: object, scripts: list[list[str]]) -> tuple[int, str] | None:
        done = real(remote, scripts)  # type: ignore[arg-type]
        seen.extend(stat.S_IMODE(os.stat(p).st_mode) for p in (host / "backups", host / "backups" / "pending"))
        return done

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "_apply", apply_then_look)
        converge(cut, [dropin(conf, "new\n")], Reporter(colour=False), Mode(), [guarded([True])])
    assert seen == [0o700, 0o700]


def held_lock(host: Path, conf: Path, snapshot: list[str]) -> Callable[[], None]:
    """Hold the pending records' lock as the host's timer does while it rolls back, and return a function that,
    0.4 s later, notes what `conf` holds then and lets go."""
    import fcntl
    (host / "backups" / "pending").mkdir(parents=True, exist_ok=True)
    lock = open(host / "backups" / "pending" / ".lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)

    def release() -> None:
        time.sleep(0.4)
        snapshot.append(conf.read_text() if conf.exists() else "(none)")
        lock.close()

    return release


def test_the_run_waits_while_the_hosts_timer_holds_the_lock(host: Path) -> None:
    """The run and the timer take turns: while the timer's rollback holds the lock, the run writes nothing."""
    import threading
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    snapshot: list[str] = []
    timer = threading.Thread(target=held_lock(host, conf, snapshot))
    timer.start()
    converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(), [guarded([True])])
    timer.join()
    assert snapshot == ["old\n"] and conf.read_text() == "new\n"


def test_a_failed_applys_clean_up_waits_while_the_hosts_timer_holds_the_lock(host: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The restore after a failed apply takes the lock too: it never restores under the timer's feet."""
    import threading
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    owner, group = me()
    bad = File(str(host / "other.conf"), "x\n", owner=owner, group=group, validate="false")
    snapshot: list[str] = []
    real = runner._apply
    timer: list[threading.Thread] = []

    def apply_then_timer(remote: object, scripts: list[list[str]]) -> tuple[int, str] | None:
        done = real(remote, scripts)  # type: ignore[arg-type]
        timer.append(threading.Thread(target=held_lock(host, conf, snapshot)))  # the timer fires now
        timer[0].start()
        return done

    monkeypatch.setattr(runner, "_apply", apply_then_timer)
    with pytest.raises(StepFailed, match="validation failed"):
        converge(LocalRemote(), [dropin(conf, "new\n"), bad], Reporter(colour=False), Mode(), [guarded([])])
    timer[0].join()
    assert snapshot == ["new\n"] and conf.read_text() == "old\n"


@pytest.mark.parametrize("stale", ["copy", "absent"])
def test_the_timer_restores_only_what_this_run_backed_up(host: Path, monkeypatch: pytest.MonkeyPatch,
                                                         stale: str) -> None:
    """An older run's backup of the second file (its old copy, or its mark that there was none) is dropped when
    the change is armed: cut after the first write, the timer restores the first file and leaves the second
    as it is, neither bringing back the ancient copy nor deleting it; it says so on stdout, nothing on stderr."""
    a, b = host / "a.conf", host / "b.conf"
    a.write_text("old a\n")
    b.write_text("old b\n")
    (host / "backups").mkdir()
    old = Path(shell.backup_path(str(b)))
    old.with_name(old.name + (".absent" if stale == "absent" else "")).write_text("ancient b\n")
    real = runner._apply

    def first_op_then_cut(remote: object, scripts: list[list[str]]) -> tuple[int, str] | None:
        real(remote, scripts[:1])  # type: ignore[arg-type]
        raise Unreachable("local: connection lost: cut by the test")

    monkeypatch.setattr(runner, "_apply", first_op_then_cut)
    with pytest.raises(Unreachable):
        converge(LocalRemote(), [dropin(a, "new a\n"), dropin(b, "new b\n")], Reporter(colour=False), Mode(),
                 [guarded([])])
    assert a.read_text() == "new a\n"
    fired = subprocess.run(["/bin/sh", pending_record("reload sshd")], capture_output=True, text=True, check=False)
    assert (fired.returncode, fired.stdout, fired.stderr) == (
        0, "pitunnel: unproven change rolled back, handler reload sshd ran again\n", "")
    assert a.read_text() == "old a\n" and b.read_text() == "old b\n"
    assert not Path(pending_record("reload sshd")).exists()


def test_a_rollback_whose_handler_fails_again_says_the_record_stays(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The rollback script's own words end the recap line (nothing else on its stderr) and its record stays for
    the next run."""
    conf, flag = host / "sshd.conf", host / "reloaded"
    conf.write_text("old\n")
    handler = Handler("reload sshd", [f"test ! -e {flag} && touch {flag}"], verify=lambda: False,  # fails run twice
                      verify_hint="a fresh login failed")
    with pytest.raises(StepFailed):
        converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(), [handler])
    assert output(capsys).splitlines()[-1] == (
        "failed       local      handler reload sshd - a fresh login failed; ROLLBACK FAILED: pitunnel: rolling back: "
        "handler reload sshd failed; the record stays for the next run")
    assert conf.read_text() == "old\n" and Path(pending_record("reload sshd")).exists()
    again = subprocess.run(["/bin/sh", pending_record("reload sshd")], capture_output=True, text=True, check=False)
    assert again.returncode == 1


def test_a_rollback_whose_handler_fails_at_its_first_command_fails(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The handler stops at its first failing command on the rollback as on its first run (`set -e` does not
    work in an `if` condition, even in a subshell): an `sshd -t` that fails is not hidden by the reload after it."""
    conf, flag, after = host / "sshd.conf", host / "checked", host / "reloaded"
    conf.write_text("old\n")
    handler = Handler("reload sshd", [f"test ! -e {flag}", f"touch {flag} {after}"], verify=lambda: False,
                      verify_hint="a fresh login failed")  # the check passes once, then fails; the reload always works
    with pytest.raises(StepFailed):
        converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(), [handler])
    assert output(capsys).splitlines()[-1].endswith(
        "ROLLBACK FAILED: pitunnel: rolling back: handler reload sshd failed; the record stays for the next run")
    assert conf.read_text() == "old\n" and Path(pending_record("reload sshd")).exists()
    after.unlink()
    again = subprocess.run(["/bin/sh", pending_record("reload sshd")], capture_output=True, text=True, check=False)
    assert again.returncode == 1 and not after.exists(), "the commands after the failing check ran"


def test_an_unguarded_handlers_rerun_after_its_restore_stops_at_its_first_failing_command(host: Path) -> None:
    """A handler without a proof that fails is run again once its files are restored; that re-run stops at its
    first failing command too: a failing check before a command that works is ROLLBACK FAILED, not rolled back."""
    conf, flag = host / "unit.conf", host / "flag"
    conf.write_text("old\n")
    op = File(str(conf), "new\n", notify=("restart it",), title="unit")
    with pytest.raises(StepFailed) as failed:  # fails on both runs, at its first command
        converge(LocalRemote(), [op], Reporter(colour=False), Mode(), [Handler("restart it", [f"test -e {flag}", "true"])])
    assert "ROLLBACK FAILED" in str(failed.value) and conf.read_text() == "old\n"
    # control: a handler that fails on its first run and works on the re-run is rolled back
    with pytest.raises(StepFailed) as failed:
        converge(LocalRemote(), [op], Reporter(colour=False), Mode(),
                 [Handler("restart it", [f"test -e {flag} || {{ touch {flag}; false; }}", "true"])])
    assert str(failed.value).endswith("; rolled back") and conf.read_text() == "old\n"
