"""Each op's fact scripts run for real in a local `sh`, with the host's tools (getent, systemctl, sshd,
dpkg-query) played by stub scripts on PATH that answer only the exact questions a host would be asked:
a fact whose script or key drifts from what its plan reads is caught here, not on a host."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pitunnel import ops
from pitunnel.facts import Facts, gather
from pitunnel.ops import (Absent, Directory, Op, Packages, PackagesAbsent, Pruned, Service, Symlink, SystemUser,
                          UserAbsent, records, services)
from pitunnel.roles.vps.checks import SshdPasswordsCheck
from tests.unit.test_ops import LocalShell

STUBS = {
    "getent": """case "$1 $2" in
  "passwd tunnel") echo 'tunnel:x:999:999:pitunnel:/home/tunnel:/usr/sbin/nologin';;
  "shadow tunnel") echo 'tunnel:!:19000::::::';;
  "passwd alice") echo 'alice:x:1000:1000:Alice:/home/alice:/bin/bash';;
  *) exit 2;;
esac""",
    "systemctl": """case "$1 $2" in
  "is-enabled up.service") echo enabled;; "is-active up.service") echo active;;
  "is-enabled down.service") echo disabled; exit 1;; "is-active down.service") echo inactive; exit 3;;
  *) echo "stub systemctl: unexpected $*" >&2; exit 9;;
esac""",
    "sshd": """[ "$*" = "-T -C user=root,host=pitunnel-check,addr=192.0.2.1" ] || exit 1
printf 'port 22\\npasswordauthentication yes\\nkbdinteractiveauthentication no\\npermitrootlogin without-password\\n'""",
    "dpkg-query": """[ "$1 $2 $3" = '-W -f ${db:Status-Status} ' ] || exit 9
case "$4" in autossh) printf 'installed ';; nginx) printf 'config-files ';; *) exit 1;; esac""",
}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setattr(records, "STATE_DIR", str(state))
    return tmp_path


def planned(op: Op) -> tuple[list[str], str]:
    plan = op.plan(gather(LocalShell(), op.facts()))
    return plan.commands, plan.reason


def test_system_user_reads_passwd_shadow_and_the_record(host: Path) -> None:
    (host / "state" / "users").write_text("tunnel\n")
    cmds, reason = planned(SystemUser("tunnel", "/home/tunnel"))
    assert reason == "password field -> '*'" and cmds == ["usermod -p '*' tunnel"]
    cmds, reason = planned(SystemUser("tunnel", "/srv/t", shell="/bin/false"))
    assert reason == "home /home/tunnel -> /srv/t, shell /usr/sbin/nologin -> /bin/false, password field -> '*'"
    assert planned(SystemUser("nobody-here", "/x"))[1] == "create"


def test_an_account_made_by_someone_else_is_refused_through_the_real_facts(host: Path) -> None:
    with pytest.raises(ops.Refused, match="account alice exists and pitunnel did not create it"):
        planned(SystemUser("alice", "/home/alice"))
    with pytest.raises(ops.Refused, match="not removed"):
        planned(UserAbsent("alice"))
    (host / "state" / "users").write_text("alice\n")
    assert planned(UserAbsent("alice"))[1] == "remove with its home"
    assert planned(UserAbsent("ghost")) == ([], "not there")


def test_service_reads_enabled_and_active(host: Path) -> None:
    assert planned(Service("up.service")) == ([], "enabled, active")
    assert planned(Service("down.service", enabled=False, running=False)) == ([], "disabled, inactive")
    cmds, reason = planned(Service("down.service"))
    assert reason == "enable, start" and cmds == ["systemctl enable --quiet down.service", "systemctl start down.service"]


def test_sshd_passwords_check_reads_the_effective_config(host: Path) -> None:
    assert planned(SshdPasswordsCheck()) == ([], "WARNING: sshd accepts passwords (PasswordAuthentication yes); "
                                                 "left as it is, consider key-only login")


def test_packages_read_dpkg_and_the_record(host: Path) -> None:
    assert planned(Packages(("autossh",)))[1] == "installed"
    assert "apt-get install" in " ".join(planned(Packages(("autossh", "jq")))[0])
    (host / "state" / "packages").write_text("autossh\n")
    cmds, reason = planned(PackagesAbsent(("autossh", "nginx", "jq")))
    assert "autossh" in " ".join(cmds) and "nginx" not in " ".join(cmds)


def test_absent_directory_symlink_and_pruned_facts(host: Path) -> None:
    f = host / "f"
    f.write_text("x")
    assert planned(Absent(str(f)))[1] == "remove" and planned(Absent(str(host / "none")))[1] == "not there"
    (host / "dangling").symlink_to(host / "gone")
    assert planned(Absent(str(host / "dangling")))[1] == "remove"
    d = host / "d"
    d.mkdir(mode=0o750)
    d.chmod(0o750)
    import grp
    import pwd
    me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    assert planned(Directory(str(d), owner=me, group=group, mode=0o750))[1] == "already as wanted"
    link = host / "link"
    link.symlink_to(f)
    assert planned(Symlink(str(link), str(f)))[0] == []
    assert planned(Symlink(str(host / "l2"), str(host / "missing")))[0] == []  # only_if_exists: target gone
    (host / "p").mkdir()
    for name in ("keep.conf", "stray.conf", "other.txt"):
        (host / "p" / name).write_text("")
    cmds, _ = planned(Pruned(str(host / "p"), "*.conf", frozenset({"keep.conf"})))
    assert "stray.conf" in " ".join(cmds) and "keep.conf" not in " ".join(cmds) and "other.txt" not in " ".join(cmds)


@pytest.mark.parametrize("op, title", [
    (Absent("/a"), "absent /a"), (Directory("/d"), "directory /d"), (Packages(("a", "b")), "packages a b"),
    (PackagesAbsent(("a", "b")), "packages purged a b"), (SystemUser("u", "/h"), "system user u"),
    (UserAbsent("u"), "user absent u"), (Service("s"), "service s"),
    (Symlink("/l", "/t"), "link /l -> /t"), (Pruned("/p", "*.c", frozenset()), "no stray /p/*.c")])
def test_default_titles(op: Op, title: str) -> None:
    assert op.title == title


def test_a_given_title_is_kept() -> None:
    for op in (Absent("/a", title="T"), Directory("/d", title="T"), Packages(("a",), title="T"),
               PackagesAbsent(("a",), title="T"), SystemUser("u", "/h", title="T"), UserAbsent("u", title="T"),
               Service("s", title="T"), Symlink("/l", "/t", title="T"), Pruned("/p", "*", frozenset(), title="T")):
        assert op.title == "T"


def test_plans_in_full(host: Path) -> None:
    """Whole plans, word for word, for the ops whose commands a host runs as root."""
    (host / "state" / "packages").write_text("autossh\n")
    (host / "state" / "users").write_text("tunnel\n")
    (host / "apt").mkdir()
    assert planned(PackagesAbsent(("autossh", "nginx", "jq"))) == (
        ["DEBIAN_FRONTEND=noninteractive apt-get purge -y -q --autoremove autossh >/dev/null",
         *ops.unrecord_commands("packages", ["autossh"])],
        "purge autossh; kept nginx: installed before pitunnel (no record that pitunnel installed it)")
    assert planned(PackagesAbsent(("jq",))) == ([], "not installed")
    assert planned(PackagesAbsent(("nginx",))) == ([], "kept nginx: installed before pitunnel (no record that pitunnel "
                                                       "installed it)")
    assert planned(UserAbsent("tunnel")) == (
        ["pkill -KILL -u tunnel || true; pkill -KILL -U tunnel || true; i=0; while { pgrep -u tunnel || pgrep -U tunnel; } "
         ">/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); pkill -KILL -u tunnel || true; pkill -KILL -U tunnel "
         "|| true; done",
         "userdel --remove tunnel 2>/dev/null || userdel tunnel",
         "getent group tunnel >/dev/null && groupdel tunnel || true", *ops.unrecord_commands("users", ["tunnel"])],
        "remove with its home")
    with pytest.raises(ops.Refused) as exc:
        planned(SystemUser("alice", "/home/alice"))
    assert str(exc.value) == ("account alice exists and pitunnel did not create it (comment 'Alice', home /home/alice): "
                              "not modified; set tunnel_user to an account of pitunnel's own (default pitunnel)")
    f = host / "f"
    f.write_text("x")
    assert planned(Absent(str(f))) == ([f"rm -rf {f}"], "remove")
    cmds, reason = planned(Packages(("autossh", "jq", "nginx")))
    assert reason.startswith("install jq, nginx")


def test_small_decisions() -> None:
    from pitunnel.facts import Facts
    from pitunnel.guard import _slug, pending_changes, pending_fact
    from pitunnel.ops import record_fact
    assert _slug("-Reload SSHD (main)-") == "reload-sshd--main"
    assert pending_changes(Facts()) == {}
    key = pending_fact().key
    found = Facts({key: (0, "# path: /stray\n# handler: reload sshd\n# path: /etc/a\n# path: /etc/b\n# handler: x\n")})
    assert pending_changes(found) == {"reload sshd": ["/etc/a", "/etc/b"], "x": []}
    with pytest.raises(ops.Refused, match=r"\(comment '', home \): not removed"):
        UserAbsent("bob").plan(Facts({"user:bob": (0, "bob:x:1000"), record_fact("users").key: (0, "")}))
    one_line = Service("s", covers=("restart s",)).plan(Facts({"unit:s": (0, "enabled")}))
    assert one_line.reason == "start" and one_line.covers == ("restart s",)
    starting = Service("s", covers=("restart s",)).plan(Facts({"unit:s": (0, "enabled\nactivating")}))
    assert starting.reason == "start" and starting.covers == ()
    unknown = Service("s", covers=("restart s",)).plan(Facts({"unit:s": (0, "enabled\nunknown")}))
    assert unknown.covers == ("restart s",)
    spaced = SshdPasswordsCheck().plan(Facts({"sshd-passwords": (0, "passwordauthentication yes\nbanner a b c\n")}))
    assert spaced.reason.startswith("WARNING")
    linked = Symlink("/l", "/t").plan(Facts({"link:/l": (0, "ABSENT\ntarget-ok")}))
    assert linked.reason == "link" and linked.backups == [] and linked.commands == ["ln -sfn /t /l"]
    assert Symlink("/l", "/t", notify=("h",)).plan(Facts({"link:/l": (0, "ABSENT\ntarget-ok")})).backups == ["/l"]


def test_a_symlink_fact_and_facts_not_read() -> None:
    from pitunnel.facts import Facts, FileState, command_fact, file_fact
    from pitunnel.remote import HostCannotRun, Result
    assert Facts({file_fact("/x").key: (0, "SYMLINK /t")}).file("/x") == FileState(True, symlink="/t")

    class Silent:
        name = "h"

        def run(self, script: str) -> Result:
            return Result(1, "", "x" * 10 + "e" * 300)

    facts = [command_fact(f"k{i}", "true") for i in range(5)]
    with pytest.raises(HostCannotRun) as exc:  # the host's own words and a hint, not an internal error (issue 24)
        gather(Silent(), facts)  # type: ignore[arg-type]
    assert str(exc.value) == f"h stopped the fact script before k0, k1, k2: {'e' * 300} (is / read-only or /tmp full on h?)"


def test_later_runs_the_ops_commands_only_when_armed_and_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Later op decides now (its own plan, its reason) but only appends its commands to the host's later
    script; arm_later hands that script to systemd-run, which runs it once the run has left."""
    from pitunnel import ops

    class Echo(ops.Op):
        title = "echo"

        def __init__(self, word: str) -> None:
            self.word = word

        def facts(self) -> list:  # type: ignore[type-arg]
            return []

        def plan(self, facts: Facts) -> ops.Plan:
            return ops.Plan([f"echo {self.word} >> {tmp_path}/out"], f"say {self.word}")

    later = tmp_path / "later.sh"
    monkeypatch.setattr(services, "LATER_SCRIPT", str(later))
    for word in ("first", "second"):
        plan = ops.Later(Echo(word)).plan(Facts({}))
        assert plan.reason == f"say {word}, once this run has left (its connection rides it)"
        subprocess.run(["sh", "-c", "\n".join(plan.commands)], check=True)
    assert not (tmp_path / "out").exists()  # nothing ran yet
    arm = ops.arm_later(2)
    assert f"mv -f {later} {later}.armed" in arm and "systemd-run --quiet --collect --on-active=2" in arm
    assert "systemctl daemon-reload" in arm  # after the later script: it may remove unit files
    subprocess.run(["sh", "-c", arm.replace("systemd-run --quiet --collect --on-active=2 "
                                            "--timer-property=AccuracySec=100ms ", "")
                                   .replace("systemctl daemon-reload", "true")], check=True)
    assert (tmp_path / "out").read_text() == "first\nsecond\n" and not later.exists()


def test_a_later_op_plans_on_the_facts_read_now_and_keeps_every_command_of_it(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    later = tmp_path / "later.sh"
    monkeypatch.setattr(services, "LATER_SCRIPT", str(later))
    gone, kept = tmp_path / "gone", tmp_path / "kept"
    gone.mkdir()
    (gone / "f").write_text("x")
    op = ops.Later(Absent(str(gone)))
    assert op.title == f"absent {gone}" and ops.Later(Absent(str(gone)), title="mine").title == "mine"
    facts = Facts({f"exists:{gone}": (0, "yes\n")})
    plan = op.plan(facts)
    assert plan.reason.endswith(", once this run has left (its connection rides it)") and plan.changes
    assert ops.Later(Absent(str(kept))).plan(Facts({f"exists:{kept}": (0, "no\n")})).commands == []  # nothing to leave
    subprocess.run(["sh", "-c", "\n".join(plan.commands)], check=True)
    assert gone.exists()  # not yet
    assert later.read_text() == "\n".join(Absent(str(gone)).plan(facts).commands) + "\n"  # every command, one a line

    class Two(Op):
        title = "two"

        def facts(self) -> list:  # type: ignore[type-arg]
            return []

        def plan(self, facts: Facts) -> ops.Plan:
            return ops.Plan([f"echo one >> {tmp_path}/said", f"echo two >> {tmp_path}/said"], "say two")

    subprocess.run(["sh", "-c", "\n".join(ops.Later(Two()).plan(Facts({})).commands)], check=True)
    arm = ops.arm_later(3, then=f"touch {tmp_path}/then")
    assert "daemon-reload; touch " in arm and "daemon-reload; '" not in ops.arm_later(3)
    subprocess.run(["sh", "-c", arm.replace("systemd-run --quiet --collect --on-active=3 "
                                            "--timer-property=AccuracySec=100ms ", "")
                                   .replace("systemctl daemon-reload", "true")], check=True)
    assert not gone.exists() and (tmp_path / "then").exists() and not later.exists()
    assert (tmp_path / "said").read_text() == "one\ntwo\n"


def test_the_link_fact_read_by_a_real_shell_tells_absent_from_elsewhere_and_the_target(host: Path) -> None:
    from pitunnel.facts import gather
    from pitunnel.ops.files import LinkState, link_fact, link_state

    def seen(path: Path, target: Path) -> LinkState:
        fact = link_fact(str(path), str(target))
        return gather(LocalShell(), [fact]).value(fact)

    target = host / "target"
    assert seen(host / "nothing", target) == LinkState(None, False)  # no link, no target
    target.write_text("")
    assert seen(host / "nothing", target) == LinkState(None, True)
    (host / "elsewhere").symlink_to(host / "other")
    assert seen(host / "elsewhere", target) == LinkState(str(host / "other"), True)
    (host / "file").write_text("")
    assert seen(host / "file", host / "gone") == LinkState("", False)  # a plain file: no link, yet not absent
    assert planned(Symlink(str(host / "file"), str(target))) == ([], f"{host / 'file'} is not a link: left alone "
                                                                     "(only a link is replaced)")
    assert (host / "file").is_file() and not (host / "file").is_symlink()
    assert link_state("ABSENT\ntarget-ok") == LinkState(None, True)
    assert link_state("NOLINK\ntarget-ok") == LinkState("", True)
    assert link_state("/t target-missing") == LinkState("/t", False)
    assert link_state("") == LinkState("", False)
