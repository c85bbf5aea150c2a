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
