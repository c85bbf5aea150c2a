"""The engine without hosts: converge's rollback (a failed op, a failed handler, a failed check) run for real in
a local `sh` on files under tmp_path; Play's own record of failed hosts; and the engine-side decisions of the
Pi role that a planted bug once slipped past (the listener wait, verify's probes, the keys on the VPS)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest

from pitunnel.facts import FileState, tcp_listeners
from pitunnel.hostkeys import HostKeyRefused
from pitunnel.inventory import Inventory, load_inventory
from pitunnel.ops import Handler, Refused
from pitunnel.play import BadLimit, Options, Play, _read_secret
from pitunnel.remote import HostCannotRun, Result, SudoRefused, Unreachable
from pitunnel.report import Reporter
from pitunnel.runner import Interrupted, Mode, StepFailed, converge, facts_for
from pitunnel.sshkeys import BadPublicKey, PublicKey, parse_public_key
from pitunnel.shared import SharedReading
from pitunnel.roles import site
from pitunnel.roles.contract import PiOffer, listens
from pitunnel.roles.pi import role as pi_role
from pitunnel.roles.pi import steps as pi_steps
from pitunnel.roles.probes.report import PathReport
from pitunnel.roles.probes.verify import verify
from pitunnel.roles.vps.authorized import authorized_keys
from tests.unit.test_guard import LocalRemote, dropin, guarded, host, me  # noqa: F401 (host: a fixture)
from tests.unit.test_ops import File

__all__ = ["host"]


def out(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]


def plain(path: Path, content: str, **kw: object) -> File:
    owner, group = me()
    return File(str(path), content, owner=owner, group=group, mode=0o644, **kw)  # type: ignore[arg-type]


def leftovers(host: Path) -> list[str]:
    backups = host / "backups"
    return sorted(p.name for p in backups.iterdir() if p.name != "pending") if backups.exists() else []


# ------------------------------------------------------------------------------------- converge, rollback


def test_a_failed_op_rolls_back_the_ops_before_it_and_skips_the_rest(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c, ran = host / "a.conf", host / "b.conf", host / "c.conf", host / "handler-ran"
    a.write_text("old a\n")
    b.write_text("old b\n")
    ops = [plain(a, "new a\n", notify=("reload x",)), plain(b, "new b\n", validate="false"), plain(c, "new c\n")]
    with pytest.raises(StepFailed, match=f"local: file {b}: .*validation failed"):
        converge(LocalRemote(), ops, Reporter(colour=False), Mode(), [Handler("reload x", [f"touch {ran}"])])
    assert a.read_text() == "old a\n" and b.read_text() == "old b\n" and not c.exists() and not ran.exists()
    lines = out(capsys)
    assert lines[0] == f"changed local file {a} - content"
    assert lines[1].startswith(f"failed local file {b} - ") and "validation failed" in lines[1]
    assert lines[2] == f"skipped local file {c} - an earlier operation failed"
    assert leftovers(host) == []


def test_a_failed_op_restores_a_file_that_did_not_exist(host: Path) -> None:
    a, b = host / "a.conf", host / "b.conf"
    b.write_text("old\n")
    with pytest.raises(StepFailed):
        converge(LocalRemote(), [plain(a, "new\n", notify=("h",)), plain(b, "new\n", validate="false")],
                 Reporter(colour=False), Mode(), [Handler("h", ["true"])])
    assert not a.exists() and leftovers(host) == []


def test_a_failed_handler_restores_the_files_and_reruns_it(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = host / "svc.conf"
    conf.write_text("old\n")
    log = host / "log"
    handler = Handler("reload svc", [f"echo run >> {log}", f"grep -q old {conf}"])
    with pytest.raises(StepFailed, match=r"handler reload svc: exit 1; rolled back"):
        converge(LocalRemote(), [plain(conf, "new\n", notify=("reload svc",))], Reporter(colour=False), Mode(), [handler])
    assert conf.read_text() == "old\n"
    assert log.read_text() == "run\nrun\n"  # once on the new file, once more on the old
    assert out(capsys)[-1] == "failed local handler reload svc - exit 1; rolled back"
    assert leftovers(host) == []


def test_a_handler_that_fails_again_after_the_restore_says_so(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = host / "svc.conf"
    conf.write_text("old\n")
    with pytest.raises(StepFailed, match="ROLLBACK FAILED: broken for good"):
        converge(LocalRemote(), [plain(conf, "new\n", notify=("h",))], Reporter(colour=False), Mode(),
                 [Handler("h", ["echo broken for good", "false"])])
    assert conf.read_text() == "old\n"


def test_a_failed_check_after_a_guarded_handler_restores(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    with pytest.raises(StepFailed, match="handler reload sshd: a fresh login failed; rolled back"):
        converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(), [guarded([False])])
    assert conf.read_text() == "old\n"
    assert out(capsys)[-1] == "failed local handler reload sshd - a fresh login failed; rolled back"
    assert leftovers(host) == []


def test_a_failed_guarded_handler_restores_without_asking_the_check(host: Path) -> None:
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    checks: list[bool] = []  # an empty list: the check must never be asked
    handler = Handler("reload sshd", [f"grep -q old {conf} || {{ echo sshd -t said no; exit 1; }}"],
                      verify=lambda: checks.pop())
    with pytest.raises(StepFailed, match="sshd -t said no; rolled back"):
        converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(), [handler])
    assert conf.read_text() == "old\n"


def test_success_runs_each_handler_once_drops_backups_and_a_rerun_changes_nothing(host: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    a, b, log = host / "a.conf", host / "b.conf", host / "log"
    ops = [plain(a, "A\n", notify=("h",)), plain(b, "B\n", notify=("h",))]
    remote = LocalRemote()
    done = converge(remote, ops, Reporter(colour=False), Mode(), [Handler("h", [f"echo ran >> {log}"]),
                                                                   Handler("unused", [f"echo no >> {log}"])])
    assert [p.changes for _, p in done.plans] == [True, True] and done.changed
    assert a.read_text() == "A\n" and b.read_text() == "B\n" and log.read_text() == "ran\n"
    assert out(capsys) == [f"changed local file {a} - create", f"changed local file {b} - create",
                           "changed local handler h - ran once"]
    assert leftovers(host) == []
    again = LocalRemote()
    converge(again, ops, Reporter(colour=False), Mode(), [Handler("h", [f"echo ran >> {log}"])])
    assert len(again.scripts) == 1 and log.read_text() == "ran\n"  # one read, nothing written, no handler
    assert out(capsys) == [f"ok local file {a} - already as wanted", f"ok local file {b} - already as wanted"]


def test_check_mode_changes_nothing_and_says_what_would(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = host / "a.conf"
    a.write_text("old\n")
    remote = LocalRemote()
    reporter = Reporter(colour=False)
    done = converge(remote, [plain(a, "new\n", notify=("h",))], reporter, Mode(check=True), [Handler("h", ["false"])])
    assert done.plans[0][1].changes and a.read_text() == "old\n" and len(remote.scripts) == 1
    assert out(capsys) == [f"would change local file {a} - content", "local would run handler: h"]
    assert reporter.recaps["local"].changed == 1 and leftovers(host) == []


def test_a_refused_plan_fails_the_step_before_anything_is_applied(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = host / "a.conf"

    def refuse(state: FileState) -> str:
        raise Refused("not ours to change")

    remote = LocalRemote()
    with pytest.raises(StepFailed, match="local: later: not ours to change"):
        converge(remote, [plain(a, "new\n"), File(str(host / "b"), refuse, title="later")], Reporter(colour=False), Mode())
    assert not a.exists() and len(remote.scripts) == 1
    assert out(capsys) == ["failed local later - not ours to change"]


def test_known_facts_are_not_read_again(host: Path) -> None:
    a = host / "a.conf"
    op = plain(a, "new\n")
    remote = LocalRemote()
    known = facts_for(remote, [op])
    converge(remote, [op], Reporter(colour=False), Mode(), known=known)
    assert len(remote.scripts) == 2 and a.read_text() == "new\n"  # the read above, then the one write


# --------------------------------------------------------------------------------------------------- Play


class FakeRemote:
    """A host for Play: `work` decides what happens; closing and round trips are recorded."""

    def __init__(self, name: str, round_trips: int = 0) -> None:
        self.name, self.round_trips, self.closed = name, round_trips, False

    def close(self) -> None:
        self.closed = True

    def run(self, script: str, **_: object) -> Result:
        self.round_trips += 1
        return Result(0, "", "")


def play_of(*names: str, limit: frozenset[str] = frozenset()) -> Play:
    return Play(None, Options(limit=limit), Reporter(colour=False),  # type: ignore[arg-type]
                {n: FakeRemote(n) for n in names})  # type: ignore[misc]


def hosts(*names: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(name=n) for n in names]


def fails(failures: dict[str, BaseException]) -> Callable[[FakeRemote], str]:
    def work(remote: FakeRemote) -> str:
        if remote.name in failures:
            raise failures[remote.name]
        return f"done {remote.name}"
    return work


def test_each_skips_the_hosts_that_failed_in_an_earlier_each(capsys: pytest.CaptureFixture[str]) -> None:
    play = play_of("a", "b", "c", "d", "e", "f")
    first = play.each(hosts("a", "b", "c", "d", "e", "f"), fails({  # type: ignore[arg-type]
        "a": StepFailed("a: reported by the runner"), "b": Unreachable("b: no route"),
        "c": HostKeyRefused("unknown host key for c"), "d": SudoRefused("d: sudo wants a password"),
        "e": KeyError("surprise")}))
    assert first == {"f": "done f"}
    assert play.failed == {"a", "b", "c", "d", "e"}
    assert out(capsys) == ["unreachable b connect - b: no route", "unreachable c connect - unknown host key for c",
                           "failed d sudo - d: sudo wants a password", "failed e internal error - KeyError: 'surprise'"]
    seen: list[str] = []
    second = play.each(hosts("a", "b", "c", "d", "e", "f"), lambda r: seen.append(r.name) or r.name)
    assert seen == ["f"] and second == {"f": "f"}
    assert play.finish() == 6  # failed (2) | unreachable (4), docs/cli.md


def test_a_host_that_cannot_run_a_script_fails_alone_in_its_own_words_with_the_hint(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A read-only or full /tmp is the host's trouble, not pitunnel's: a failed line (as every failed host's, the
    status word the recap and colours go by) with the host's error and where to look; the other host goes on."""
    play = play_of("a", "b")
    cannot = HostCannotRun("a", "sh: 1: cannot create /tmp/pitunnel.x: Read-only file system\n")
    assert play.each(hosts("a", "b"), fails({"a": cannot})) == {"b": "done b"}  # type: ignore[arg-type]
    assert play.failed == {"a"}
    assert out(capsys) == ["failed a run a script - a cannot run a script: sh: 1: cannot create /tmp/pitunnel.x: "
                           "Read-only file system (is / read-only or /tmp full on a?)"]


def test_a_host_interrupted_after_its_step_is_noted_by_name_and_listed_as_stopped(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while a host's step ran (the step finished, then Interrupted): the note under that host's name says
    it stopped, the run's last words list it among the hosts stopped before their next step, and the other host's
    work is kept."""
    play = play_of("a", "b")
    assert play.each(hosts("a", "b"), fails({"a": Interrupted()})) == {"b": "done b"}  # type: ignore[arg-type]
    assert out(capsys) == ["a interrupted: stopped after the step in flight"]
    assert play._stopped() == ["changed so far: nothing", "stopped before their next step: a"]


def test_a_host_that_printed_no_line_still_fails_and_is_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    """StepFailed is reported by whoever raised it: Play must not need the reporter to remember the host."""
    play = play_of("a", "b")
    play.each(hosts("a", "b"), fails({"a": StepFailed("quiet")}))  # type: ignore[arg-type]
    assert play.failed == {"a"} and not play.reporter.recaps["a"].bad
    assert play.each(hosts("a", "b"), lambda r: r.name) == {"b": "b"}  # type: ignore[arg-type]
    assert play.finish() == 2  # a failed host


def test_finish_exit_code_recap_and_connections(capsys: pytest.CaptureFixture[str]) -> None:
    play = play_of("vps", "pi1")
    play.remotes["vps"].round_trips = 4  # type: ignore[misc]
    play.each(hosts("vps", "pi1"), lambda r: None)  # type: ignore[arg-type]
    play.reporter.line("vps", "changed", "x")
    assert play.finish() == 0
    assert all(r.closed for r in play.remotes.values())  # type: ignore[attr-defined]
    assert list(play.reporter.recaps) == ["vps", "pi1"]  # every host played is in the recap, in order
    assert play.reporter.recaps["vps"].round_trips == 4
    text = capsys.readouterr().out
    assert "vps                        : ok=0    changed=1    unreachable=0    failed=0    skipped=0    round_trips=4" in text
    assert "pi1                        : ok=0    changed=0" in text


def test_each_runs_hosts_in_parallel() -> None:
    import threading
    barrier = threading.Barrier(3, timeout=5)
    play = play_of("a", "b", "c")
    assert play.each(hosts("a", "b", "c"), lambda r: barrier.wait() >= 0) == {"a": True, "b": True, "c": True}  # type: ignore[arg-type]
    assert play.each([], lambda r: 1) == {}


def test_selected_and_options() -> None:
    play = play_of("a", "b", limit=frozenset({"b"}))
    assert [h.name for h in play.selected(hosts("a", "b"))] == ["b"]  # type: ignore[arg-type]
    assert [h.name for h in play_of("a").selected(hosts("a", "b"))] == ["a", "b"]  # type: ignore[arg-type]
    assert Options(check=True, diff=True).mode == Mode(check=True, diff=True)
    assert Options().mode == Mode()


@pytest.fixture()
def inv(tmp_path: Path) -> Inventory:
    (tmp_path / "login").write_text("s3cret\n\n")
    (tmp_path / "sudo").write_text("sudoX\n")
    file = tmp_path / "hosts.yml"
    file.write_text(textwrap.dedent("""
        settings: {laptop_key: null, known_hosts: kh}
        vps: {main: {address: 203.0.113.1}}
        pis:
          private: {address: 10.0.0.3, password_file: login, tunnels: {ssh: {type: ssh, remote_port: 20024}}}
          other: {address: 10.0.0.4, sudo_password_file: sudo, tunnels: {ssh: {type: ssh, remote_port: 20025}}}
        """))
    return load_inventory(file)


def test_start_opens_a_remote_per_host_with_its_secrets(inv: Inventory, tmp_path: Path) -> None:
    options = Options(accept_new_host_keys=True, diff=True)
    play = Play.start(inv, options, quiet=True)
    assert play.inventory is inv and play.options == options and play.reporter.show_diff
    assert all(r.spec is inv.pis.get(n, inv.vps.get(n)) and r.known_hosts == inv.settings.known_hosts
               for n, r in play.remotes.items())
    assert play.remotes["other"].credentials.sudo_password == "sudoX"  # an X at the end is part of it
    assert not Play.start(inv, Options()).reporter.show_diff
    assert sorted(play.remotes) == ["main", "other", "private"]
    assert play.remotes["private"].credentials.login_password == "s3cret"  # the file's newlines are not part of it
    assert play.remotes["other"].credentials.login_password is None
    assert play.remotes["private"].accept_new_host_keys and play.reporter.quiet
    assert play.failed == set()
    with pytest.raises(BadLimit, match=r"--limit 'nope' matches no host of .* \(hosts: main, private, other;"):
        Play.start(inv, Options(limit=frozenset({"nope", "private"})))
    assert _read_secret(None) is None


# ------------------------------------------------------------------------ the Pi role's engine-side checks


def test_the_listener_wait_fails_when_the_forward_never_listens(inv: Inventory, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 0.6)
    reads: list[int] = []
    listeners = SharedReading(lambda: reads.append(1) or tcp_listeners("LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\n"))
    play = SimpleNamespace(reporter=Reporter(colour=False))
    with pytest.raises(StepFailed, match="not listening"):
        site.wait_listening(play, inv.pis["private"].first_path, listeners, None)  # type: ignore[arg-type]
    assert reads  # it did look again while waiting
    assert out(capsys) == ["failed private tunnel listening on the VPS - main: not listening after 0.6s: "
                           "127.0.0.1:20024 (see `journalctl -u pitunnel@main.service` on the Pi)"]


def test_the_listener_wait_passes_once_the_forward_listens(inv: Inventory, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 5)
    ss = "LISTEN 0 128 127.0.0.1:20024 0.0.0.0:*\n"
    play = SimpleNamespace(reporter=Reporter(colour=False))
    site.wait_listening(play, inv.pis["private"].first_path, SharedReading(lambda: tcp_listeners(ss)), None)  # type: ignore[arg-type]
    assert out(capsys)[0].startswith("ok private tunnel listening on the VPS - main: 127.0.0.1:20024 (after ")
    site.wait_listening(play, inv.pis["private"].first_path, SharedReading(lambda: frozenset()), tcp_listeners(ss))  # type: ignore[arg-type]
    assert out(capsys) == ["ok private tunnel listening on the VPS - main: 127.0.0.1:20024"]  # already: no wait
    present = tcp_listeners(ss)  # what the wait compares: ss's local addresses against each Pi's listen specs
    assert {p: [s.spec for s in listens(inv.pis[p].first_path) if s.spec not in present] for p in ("private", "other")} == {
        "private": [], "other": ["127.0.0.1:20025"]}


def test_the_keys_given_are_authorised_on_the_vps(inv: Inventory) -> None:
    op = authorized_keys(inv, inv.vps["main"], {"private": "ssh-ed25519 AAAAnew"})
    text = op.wanted(FileState(exists=False))
    assert text == ('restrict,port-forwarding,permitlisten="127.0.0.1:20024",command="/bin/false" '
                    "ssh-ed25519 AAAAnew pitunnel:private\n")
    kept = FileState(True, content=b'restrict,command="x" ssh-ed25519 AAAAold pitunnel:other\n'
                                   b'restrict ssh-ed25519 AAAAgone pitunnel:removed\nssh-rsa AAAAforeign someone\n')
    lines = authorized_keys(inv, inv.vps["main"], {"private": "ssh-ed25519 AAAAnew"}).wanted(kept).splitlines()
    assert [l.split()[-2:] for l in lines] == [["AAAAnew", "pitunnel:private"], ["AAAAold", "pitunnel:other"]]
    assert all(l.startswith("restrict,port-forwarding,permitlisten=") for l in lines)
    replaced = authorized_keys(inv, inv.vps["main"], {"other": "ssh-ed25519 AAAAnewer"}).wanted(kept)
    assert "AAAAold" not in replaced and "AAAAnewer pitunnel:other" in replaced
    dropped = authorized_keys(inv, inv.vps["main"], {}, drop=frozenset({"other"})).wanted(kept)
    assert dropped == ""
    assert op.path.endswith("/.ssh/authorized_keys") and op.mode == 0o600


# --------------------------------------------------------------------------------------- verify's probes


class ScriptedRemote(FakeRemote):
    def __init__(self, name: str, stdout: str) -> None:
        super().__init__(name)
        self.stdout = stdout
        self.target = SimpleNamespace(known_name=name, user="pi")  # how verify files its host key

    def run(self, script: str, **_: object) -> Result:
        self.round_trips += 1
        return Result(0, self.stdout, "")


UNIT_UP = "enabled=enabled\nactive=active\nwatchdog=active\n"
SSHD_OFF = "passwordauthentication no\nkbdinteractiveauthentication no\n"


def run_verify(inv: Inventory, probes: str, unit: str = UNIT_UP, sshd: str = SSHD_OFF,
               ss: str = "LISTEN 0 128 127.0.0.1:20024 0.0.0.0:*\n") -> PathReport:
    """verify of the Pi `private`: the Pi's facts answered in the order verify reads them (unit, probes, sshd -T),
    and the VPS's (its listeners, its host firewall: none)."""
    pi_stdout, vps_stdout = (
        "".join(f"@@FACT {i}\n{out}\n@@RC {i} 0\n" for i, out in enumerate(answers)) for answers in ((unit, probes, sshd), (ss, "")))
    play = Play(inv, Options(limit=frozenset({"private"})), Reporter(colour=False),
                {"main": ScriptedRemote("main", vps_stdout), "private": ScriptedRemote("private", pi_stdout)})  # type: ignore[dict-item]
    (report,) = verify(play)
    return report


def checks(report: PathReport) -> dict[str, bool]:
    return {c.name: c.passed for c in report.checks}


def test_verify_fails_a_probe_that_got_through(inv: Inventory) -> None:
    fine = run_verify(inv, "PROBE shell ok\nPROBE forward-to-vps ok\n")
    assert checks(fine)["refused: shell"] and checks(fine)["refused: forward-to-vps"]
    assert checks(fine)["unit enabled and active"] and checks(fine)["watchdog active"]
    assert checks(fine)["ssh: VPS listens on 127.0.0.1:20024"]
    bad = run_verify(inv, "PROBE shell ok\nPROBE forward-to-vps FAIL reached the VPS sshd\n")
    probe = next(c for c in bad.checks if c.name == "refused: forward-to-vps")
    assert not probe.passed and probe.detail == "forward-to-vps FAIL reached the VPS sshd"
    assert "rerun provision-vps" in probe.hint and not bad.passed


def test_verify_fails_a_unit_down_and_a_missing_or_public_listener(inv: Inventory) -> None:
    down = run_verify(inv, "", unit="enabled=enabled\nactive=failed\nwatchdog=inactive\n", ss="LISTEN 0 128 0.0.0.0:20024 0.0.0.0:*\n")
    assert not checks(down)["unit enabled and active"] and not checks(down)["watchdog active"]
    listen = next(c for c in down.checks if c.name == "ssh: VPS listens on 127.0.0.1:20024")
    assert not listen.passed and listen.detail == "listeners on that port: ['0.0.0.0:20024']"
    assert not checks(run_verify(inv, "", ss=""))["ssh: VPS listens on 127.0.0.1:20024"]


def test_a_report_passes_only_if_it_has_checks_and_all_passed() -> None:
    report = PathReport("pi1")
    assert not report.passed  # nothing proven is not a pass
    report.add("a", True, "fine", "never shown")
    assert report.passed and report.checks[0].hint == ""
    report.add("w", True, "but", "change this", warning=True)
    assert report.passed and report.checks[1].hint == "change this"
    report.add("b", False, "broken", "fix it")
    assert not report.passed and report.checks[2].hint == "fix it"


# ------------------------------------------------------------------ the Pis' keys reach the VPS (the step)


PI_KEY = paramiko.ECDSAKey.generate()


class AnsweringVps(FakeRemote):
    """A VPS that answers the fact reads of provision-pi's VPS step from `answers` (a snippet's substring ->
    its output), applies every op as done, and keeps each script it was sent."""

    def __init__(self, name: str, answers: dict[str, str]) -> None:
        super().__init__(name)
        self.answers, self.scripts = answers, []  # type: list[str]

    def run(self, script: str, **_: object) -> Result:
        import re
        self.scripts.append(script)
        out = []
        for index, snippet in re.findall(r"printf '@@FACT (\d+)\\n'; \( (.*?)\n\) 2>&1", script, re.S):
            answer = next((v for k, v in self.answers.items() if k in snippet), "")
            out.append(f"@@FACT {index}\n{answer}\n@@RC {index} 0\n")
        for index in re.findall(r"printf '@@OP (\d+)\\n'", script):
            out.append(f"@@OP {index}\n\n@@OPRC {index} 0\n")
        return Result(0, "".join(out), "")


def test_the_pis_keys_learnt_by_base_are_written_on_the_vps(inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    import base64
    vps = AnsweringVps("main", {"getent passwd": "pitunnel:x:999:999::/home/pitunnel:/usr/sbin/nologin",
                                "ssh_host_": "cur ssh-ed25519 AAAAhost", "authorized_keys": "ABSENT",
                                "sshd -T": "permitlisten 127.0.0.1:20024 127.0.0.1:20025"})
    pis = {n: FakeRemote(n) for n in ("private", "other")}
    for pi in pis.values():
        pi.run = lambda script, **_: (_ for _ in ()).throw(StepFailed("the Pi's side is not under test"))  # type: ignore[method-assign]
    play = Play(inv, Options(), Reporter(colour=False), {"main": vps, **pis})  # type: ignore[dict-item]
    key = f"{PI_KEY.get_name()} {PI_KEY.get_base64()}"
    with pytest.raises(BadPublicKey):  # a bad key cannot even be offered: no PublicKey holds it
        PublicKey("ssh-ed25519", b"not-a-key")
    bases = {"private": pi_steps.PiBase(PiOffer("private", parse_public_key(key), listens(inv.pis["private"].first_path)), False),
             "other": pi_steps.PiBase(PiOffer("other", None, listens(inv.pis["other"].first_path)), False)}
    site.connect(play, bases)
    wanted = authorized_keys(inv, inv.vps["main"], {"private": key}).wanted(FileState(False))
    assert f"{key} pitunnel:private" in wanted and "pitunnel:other" not in wanted  # a bad key is never sent
    blob = base64.b64encode(wanted.encode()).decode()
    assert any(f"printf %s {blob} | base64 -d > new" in s for s in vps.scripts), "the Pi's key was not written"
    assert "changed main authorized keys of the Pis - create" in out(capsys)


def test_start_prompts_once_and_the_typed_secrets_win(inv: Inventory, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import pitunnel.play as play_module
    prompts: list[str] = []
    monkeypatch.setattr(play_module.getpass, "getpass", lambda prompt: prompts.append(prompt) or f"typed {len(prompts)}")
    play = Play.start(inv, Options(prompt_login_password=True, prompt_sudo_password=True))
    assert prompts == ["Login password (first contact): ", "sudo password: "]
    assert {n: (r.credentials.login_password, r.credentials.sudo_password) for n, r in play.remotes.items()} == {
        n: ("typed 1", "typed 2") for n in ("main", "private", "other")}
    prompts.clear()
    play = Play.start(inv, Options(prompt_sudo_password=True))
    assert prompts == ["sudo password: "] and play.remotes["private"].credentials.login_password == "s3cret"
    assert not play.remotes["private"].accept_new_host_keys and not play.reporter.quiet
    with pytest.raises(BadLimit, match=r"--limit 'x' matches no host"):  # the first pattern, sorted
        Play.start(inv, Options(limit=frozenset({"y", "x"})))


def test_a_secret_keeps_its_spaces(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(" pass word \n")
    assert _read_secret(tmp_path / "pw") == " pass word "


# ------------------------------------------------------------------------ handlers: covered, several, long


class Starts:
    """An op that starts a service from stopped: its change covers the service's restart handler."""

    title, notify = "service svc started", ()

    def __init__(self, log: Path, covers: tuple[str, ...] = ("restart svc",)) -> None:
        self.log, self.covers = log, covers

    def facts(self) -> list[object]:
        return []

    def plan(self, facts: object) -> object:
        from pitunnel.ops import Plan
        return Plan([f"echo started >> {self.log}"], "start", covers=self.covers)


def test_a_handler_covered_by_a_later_start_is_not_run_and_the_other_handlers_still_run(
        host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf, other, third, log = host / "svc.conf", host / "other.conf", host / "third.conf", host / "log"
    ops = [plain(conf, "x\n", notify=("restart svc",)), plain(other, "y\n", notify=("reload other",)),
           plain(third, "z\n", notify=("reload third",)), Starts(log)]
    converge(LocalRemote(), ops, Reporter(colour=False), Mode(),  # type: ignore[list-item]
             [Handler("reload other", [f"echo other >> {log}"]), Handler("restart svc", [f"echo restarted >> {log}"]),
              Handler("reload third", [f"echo third >> {log}"])])
    assert log.read_text() == "started\nother\nthird\n"
    assert out(capsys)[-3:] == ["changed local handler reload other - ran once",
                                "ok local handler restart svc - not needed: started after the change",
                                "changed local handler reload third - ran once"]
    assert leftovers(host) == []  # the covered handler's backups dropped too


def test_covered_needs_the_start_after_the_last_notifier() -> None:
    from pitunnel.ops import Plan
    from pitunnel.runner import covered
    start = Plan(["x"], "start", covers=("h",))
    notifier = SimpleNamespace(notify=("h",))
    other = SimpleNamespace(notify=())
    assert covered(Handler("h", []), [(other, start)]) is start  # type: ignore[list-item]  # nothing notified it
    assert covered(Handler("h", []), [(notifier, Plan(["y"], "w")), (other, start)]) is start  # type: ignore[list-item]
    assert covered(Handler("h", []), [(other, start), (notifier, Plan(["y"], "w"))]) is None  # type: ignore[list-item]
    assert covered(Handler("h", [], verify=lambda: True), [(other, start)]) is None  # type: ignore[list-item]


def test_a_guarded_handler_then_an_unguarded_one_both_run(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf, other, log = host / "sshd.conf", host / "other.conf", host / "log"
    ops = [dropin(conf, "new\n"), plain(other, "y\n", notify=("reload other",))]
    converge(LocalRemote(), ops, Reporter(colour=False), Mode(),
             [guarded([True]), Handler("reload other", [f"echo other >> {log}"])])
    assert log.read_text() == "other\n"
    assert out(capsys)[-2:] == ["changed local handler reload sshd - ran once", "changed local handler reload other - ran once"]


def test_a_failing_handler_says_the_end_of_its_output(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = host / "svc.conf"
    conf.write_text("old\n")
    noise = "a" * 100 + "b" * 300
    with pytest.raises(StepFailed) as exc:
        converge(LocalRemote(), [plain(conf, "new\n", notify=("h",))], Reporter(colour=False), Mode(),
                 [Handler("h", [f"grep -q old {conf} || {{ echo {noise}; exit 1; }}"])])
    assert str(exc.value) == f"local: handler h: {'b' * 300}; rolled back"


def test_a_failing_rollback_says_the_end_of_its_output(host: Path) -> None:
    conf = host / "svc.conf"
    conf.write_text("old\n")
    noise = "a" * 100 + "c" * 200
    with pytest.raises(StepFailed) as exc:
        converge(LocalRemote(), [plain(conf, "new\n", notify=("h",))], Reporter(colour=False), Mode(),
                 [Handler("h", [f"echo {noise}", "false"])])
    assert str(exc.value).endswith(f"; ROLLBACK FAILED: {'c' * 200}") and "a" not in str(exc.value).split("FAILED: ")[1]


def test_a_guarded_handler_that_fails_and_whose_rollback_fails(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pitunnel import guard
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    noise = "a" * 100 + "d" * 300
    monkeypatch.setattr(guard, "rollback_commands", lambda h: ["echo " + "e" * 100 + "f" * 200, "false"])
    import pitunnel.runner as runner_module
    monkeypatch.setattr(runner_module, "rollback_commands", guard.rollback_commands)
    with pytest.raises(StepFailed) as exc:
        converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(),
                 [Handler("reload sshd", [f"echo {noise}", "false"], verify=lambda: True)])
    assert str(exc.value) == f"local: handler reload sshd: {'d' * 300}; ROLLBACK FAILED: {'f' * 200}"


def test_a_failed_check_without_a_hint_says_so(host: Path) -> None:
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    with pytest.raises(StepFailed, match="^local: handler reload sshd: check after the handler failed; rolled back$"):
        converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(),
                 [Handler("reload sshd", ["true"], verify=lambda: False)])
    assert conf.read_text() == "old\n"


def test_an_earlier_change_in_two_files_is_named_with_both(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_guard import cut_after_apply
    a, b = host / "a.conf", host / "b.conf"
    with monkeypatch.context() as cut:
        cut_after_apply(cut)
        with pytest.raises(Unreachable):
            converge(LocalRemote(), [dropin(a, "A\n"), dropin(b, "B\n")], Reporter(colour=False), Mode(), [guarded([])])
    with pytest.raises(StepFailed, match=f"^local: handler reload sshd: an earlier run's unproven change to {a}, {b}: "
                                         "a fresh login failed; rolled back$"):
        converge(LocalRemote(), [dropin(a, "A\n"), dropin(b, "B\n")], Reporter(colour=False), Mode(), [guarded([False])])
    assert not a.exists() and not b.exists()


# ------------------------------------------------------------------- check mode, pending changes, _apply


def test_check_mode_prints_diffs_and_keeps_ok_ops_ok(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = host / "a.conf", host / "b.conf"
    a.write_text("old\n")
    b.write_text("same\n")
    converge(LocalRemote(), [plain(a, "new\n"), plain(b, "same\n")], Reporter(colour=False, show_diff=True),
             Mode(check=True, diff=True))
    lines = out(capsys)
    assert lines[0] == f"would change local file {a} - content" and "-old" in lines and "+new" in lines
    assert lines[-1] == f"ok local file {b} - already as wanted"


def test_check_mode_names_an_earlier_unproven_change(host: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.test_guard import cut_after_apply
    a, b = host / "a.conf", host / "b.conf"
    with monkeypatch.context() as cut:
        cut_after_apply(cut)
        with pytest.raises(Unreachable):
            converge(LocalRemote(), [dropin(a, "A\n"), dropin(b, "B\n")], Reporter(colour=False), Mode(), [guarded([])])
    capsys.readouterr()
    converge(LocalRemote(), [dropin(a, "A\n"), dropin(b, "B\n")], Reporter(colour=False), Mode(check=True), [guarded([])])
    assert out(capsys) == [
        f"would change local handler reload sshd - an earlier run left {a}, {b} unproven: would prove it with a fresh "
        "login, or roll it back",
        f"ok local file {a} - written by an earlier run, not proven yet: handler reload sshd would prove it",
        f"ok local file {b} - written by an earlier run, not proven yet: handler reload sshd would prove it"]


def test_a_record_the_timer_ran_before_the_proof_is_reported_as_rolled_back_by_the_host(
        host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import pitunnel.runner as runner_module
    from pitunnel.guard import pending_record
    conf = host / "sshd.conf"
    conf.write_text("old\n")
    real = runner_module._apply

    def apply_then_timer(remote: object, scripts: list[list[str]]) -> object:
        done = real(remote, scripts)  # type: ignore[arg-type]
        subprocess.run(["sh", pending_record("reload sshd")], check=True)  # the host's timer fires now
        return done

    monkeypatch.setattr(runner_module, "_apply", apply_then_timer)
    with pytest.raises(StepFailed) as exc:
        converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(), [guarded([True], seconds=60)])
    assert str(exc.value) == ("local: handler reload sshd: no proof within 60 s, so the host's timer rolled the change "
                              "back on its own; rolled back")
    assert conf.read_text() == "old\n"


def test_the_timer_winning_during_the_check_is_not_rolled_back_twice(host: Path) -> None:
    import subprocess
    from pitunnel.guard import pending_record
    conf = host / "sshd.conf"
    conf.write_text("old\n")

    def check() -> bool:
        subprocess.run(["sh", pending_record("reload sshd")], check=True)
        return True

    with pytest.raises(StepFailed) as exc:
        converge(LocalRemote(), [dropin(conf, "new\n")], Reporter(colour=False), Mode(),
                 [Handler("reload sshd", ["true"], verify=check, confirm_seconds=30)])
    assert str(exc.value) == ("local: handler reload sshd: no proof within 30 s, so the host's timer rolled the change "
                              "back on its own; rolled back")


class Answers:
    name = "h"

    def __init__(self, stdout: str, stderr: str = "", rc: int = 0) -> None:
        self.result, self.scripts = Result(rc, stdout, stderr), []  # type: Result, list[str]

    def run(self, script: str, **_: object) -> Result:
        self.scripts.append(script)
        return self.result


def test_apply_reads_each_ops_code_and_output() -> None:
    from pitunnel.runner import _apply
    ok = Answers("a banner before the script\n@@OP 0\nfine\n\n@@OPRC 0 0\n@@OP 1\n  one\n\n two \n\n@@OPRC 1 4\n")
    assert _apply(ok, [["true"], ["false"]]) == (1, "one two")  # type: ignore[arg-type]
    assert ok.scripts[0].endswith("[ $rc -eq 0 ] || exit $rc\n")
    assert _apply(Answers("@@OP 0\n@@OPRC 0 0\n"), [["true"]]) is None  # type: ignore[arg-type]
    long = "@@OP 0\n" + "x" * 100 + "y" * 400 + "\n@@OPRC 0 1\n"
    assert _apply(Answers(long), [["false"]]) == (0, "y" * 400)  # type: ignore[arg-type]
    assert _apply(Answers("@@OP 0\n@@OPRC 0 3\n"), [["false"]]) == (0, "exit 3")  # type: ignore[arg-type]


def test_apply_when_the_script_died_before_an_op_ended() -> None:
    from pitunnel.runner import _apply
    assert _apply(Answers("@@OP 0\n@@OPRC 0 0\n", "x" * 10 + "e" * 400, 137), [["true"], ["sleep 9"]]) == (1, "e" * 400)  # type: ignore[arg-type]
    assert _apply(Answers("", "", 255), [["true"]]) == (0, "did not run (script exit 255)")  # type: ignore[arg-type]
    assert _apply(Answers("@@OP 0\nkilled half way\n", "", 137), [["x"]]) == (0, "killed half way")  # type: ignore[arg-type]


def test_a_run_that_changes_some_ops_reports_the_others_ok_and_shows_diffs(host: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    a, b = host / "a.conf", host / "b.conf"
    a.write_text("old\n")
    b.write_text("same\n")
    converge(LocalRemote(), [plain(b, "same\n"), plain(a, "new\n")], Reporter(colour=False, show_diff=True), Mode(diff=True))
    lines = out(capsys)
    assert lines[0] == f"ok local file {b} - already as wanted"
    assert lines[1] == f"changed local file {a} - content" and "-old" in lines and "+new" in lines
    assert a.read_text() == "new\n"


def test_the_recap_says_not_reached_only_of_an_interrupted_host_never_connected(
        capsys: pytest.CaptureFixture[str]) -> None:
    """After a Ctrl-C, a host stopped before its next step that was never connected to is `interrupted: not
    reached` in the recap; one stopped after its connection was opened, and one that was not stopped, are not."""
    play = play_of("vps", "pi1", "pi2")
    for name, path in (("vps", "direct"), ("pi1", None), ("pi2", "tunnel")):
        play.remotes[name].path = path  # type: ignore[attr-defined]
        play.reporter.recap(name)
    play.interrupted.update({"pi1", "pi2"})
    play.finish()
    recap = {line.split()[0]: line for line in out(capsys) if " : ok=" in line}
    assert recap["pi1"].endswith("round_trips=0 interrupted: not reached")
    assert recap["pi2"].endswith("round_trips=0") and recap["vps"].endswith("round_trips=0")


def test_an_interrupted_run_says_what_changed_where_and_which_hosts_never_got_their_next_step(tmp_path: Path) -> None:
    import io

    from tests.unit.fake_hosts import load
    from tests.unit.test_site import INVENTORY

    play = Play(load(tmp_path, INVENTORY), Options(), Reporter(colour=False, out=io.StringIO()))
    assert play._stopped() == ["changed so far: nothing"]
    play.reporter.line("main", "changed", "a step")
    play.reporter.line("main", "changed", "another")
    play.reporter.line("pi1", "ok", "a step")
    play.reporter.line("pi2", "changed", "a step")
    play.interrupted.update({"pi3", "pi1"})
    assert play._stopped() == ["changed so far: main 2, pi2 1", "stopped before their next step: pi1, pi3"]


# ------------------------------------------------------------------- what a run says while it works, and returns


class SlowRemote(LocalRemote):
    """A host whose every script takes a moment: long enough for a heartbeat due at once to be printed."""

    def run(self, script: str) -> Result:
        import time
        time.sleep(0.05)
        return super().run(script)


def beats(reporter: Reporter) -> list[str]:
    """The heartbeat lines a reporter printed (due at once, then not again), without their elapsed time."""
    import re
    assert reporter.out is not None
    text = reporter.out.getvalue()  # type: ignore[attr-defined]
    return [re.sub(r" \(\d+s\)$", "", " ".join(line.split())) for line in text.splitlines() if line.startswith("running")]


def beating() -> Reporter:
    import io
    return Reporter(colour=False, out=io.StringIO(), heartbeat_after=0, heartbeat_every=60)


def test_the_heartbeat_names_the_host_and_the_step_running(host: Path) -> None:
    """One changed op is named alone; more are named by the first and how many more; the handlers all by name."""
    a, b = host / "sshd.conf", host / "nginx.conf"
    nginx = Handler("reload nginx", ["true"])
    one = beating()
    converge(SlowRemote(), [dropin(a, "A\n")], one, Mode(), [guarded([True]), nginx])
    assert beats(one) == ["running local reading the host", f"running local file {a}", "running local handler reload sshd"]
    two = beating()
    converge(SlowRemote(), [dropin(a, "A2\n"), plain(b, "B\n", notify=("reload nginx",))], two, Mode(),
             [guarded([True]), nginx])
    assert beats(two) == ["running local reading the host", f"running local file {a} (+1 more)",
                          "running local handler reload sshd, reload nginx"]
    three = beating()
    converge(SlowRemote(), [dropin(a, "A3\n"), plain(b, "B3\n"), plain(host / "c.conf", "C\n")], three, Mode(),
             [guarded([True])])
    assert f"running local file {a} (+2 more)" in beats(three)


def test_the_heartbeat_names_the_handler_proving_an_earlier_change(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_guard import cut_after_apply
    a = host / "sshd.conf"
    with monkeypatch.context() as cut:
        cut_after_apply(cut)
        with pytest.raises(Unreachable):
            converge(LocalRemote(), [dropin(a, "A\n")], Reporter(colour=False), Mode(), [guarded([])])
    reporter = beating()
    converge(SlowRemote(), [dropin(a, "A\n")], reporter, Mode(), [guarded([True])])
    assert beats(reporter) == ["running local reading the host", "running local handler reload sshd"]


def test_an_earlier_change_proven_is_named_so_beside_the_ops_this_run_changes(
        host: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The file an earlier run wrote and this run proves is "proven now", not "already as wanted", also when other
    ops change; and converge returns what it read (the pending change among it)."""
    from pitunnel.guard import pending_changes
    from tests.unit.test_guard import cut_after_apply
    a, b = host / "sshd.conf", host / "other.conf"
    with monkeypatch.context() as cut:
        cut_after_apply(cut)
        with pytest.raises(Unreachable):
            converge(LocalRemote(), [dropin(a, "A\n")], Reporter(colour=False), Mode(), [guarded([])])
    capsys.readouterr()
    done = converge(LocalRemote(), [dropin(a, "A\n"), plain(b, "B\n")], Reporter(colour=False), Mode(), [guarded([True])])
    lines = out(capsys)
    assert f"ok local file {a} - written by an earlier run, proven now (handler reload sshd)" in lines
    assert any(line.startswith(f"changed local file {b} - ") for line in lines)
    assert pending_changes(done.facts) == {"reload sshd": [str(a)]}


def test_check_mode_says_why_an_earlier_unproven_file_would_change_again(
        host: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A file an earlier run left unproven that this run wants otherwise: check mode gives the change's own reason
    (its content), and returns what it read."""
    from pitunnel.guard import pending_changes
    from tests.unit.test_guard import cut_after_apply
    a = host / "sshd.conf"
    a.write_text("old\n")
    with monkeypatch.context() as cut:
        cut_after_apply(cut)
        with pytest.raises(Unreachable):
            converge(LocalRemote(), [dropin(a, "A\n")], Reporter(colour=False), Mode(), [guarded([])])
    capsys.readouterr()
    done = converge(LocalRemote(), [dropin(a, "A2\n")], Reporter(colour=False), Mode(check=True), [guarded([])])
    assert out(capsys)[1:] == [f"would change local file {a} - content", "local would run handler: reload sshd"]
    assert pending_changes(done.facts) == {"reload sshd": [str(a)]}


def test_a_fact_script_cut_before_the_pending_records_names_them(host: Path) -> None:
    from pitunnel.remote import HostCannotRun
    with pytest.raises(HostCannotRun, match="^h stopped the fact script before pending-changes: sh: Killed "):
        converge(Answers("", "sh: Killed", 137), [], Reporter(colour=False), Mode())  # type: ignore[arg-type]
