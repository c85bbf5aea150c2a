"""Unit tests for pitunnel.ops and pitunnel.facts: planning from hand-made facts (pure), and the
fact scripts and planned commands run for real in a local shell on files under tmp_path."""

from __future__ import annotations

import base64
import grp
import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest

from pitunnel import ops
from pitunnel.facts import LISTENERS, Fact, Facts, FileState, command_fact, file_fact, gather
from pitunnel.remote import HostCannotRun
from pitunnel.ops import (APT_AGE, APT_FRESH_SECONDS, BACKUP_DIR, Absent, Directory, File, Handler, KeyPair, Observe,
                          Packages, Plan,
                          PackagesAbsent, Pruned, Refused, Service, Symlink, SystemUser, UserAbsent,
                          backup_commands, backup_path, managed_lines, record_fact, restore_commands)
from pitunnel.ops import shell, users
from pitunnel.ops.packages import _pkg_fact
from pitunnel.roles.vps.checks import SshdPasswordsCheck
from pitunnel.runner import covered

# ---------------------------------------------------------------------------
# helpers: fact outputs exactly as the fact scripts print them (after gather's parsing)


def file_output(content: bytes | str, owner: str = "root", group: str = "root", mode: int = 0o644) -> str:
    data = content.encode() if isinstance(content, str) else content
    return f"{owner}:{group}:{mode:o}\n{base64.b64encode(data).decode()}"


def file_facts(path: str, output: str = "ABSENT") -> Facts:
    return Facts({file_fact(path).key: (0, output)})


def facts_of(*pairs: tuple[Fact | str, str]) -> Facts:
    found = Facts()
    for fact, output in pairs:
        found[fact.key if isinstance(fact, Fact) else fact] = (0, output)
    return found


class LocalShell:
    """A stand-in for Remote: runs the script in a real local `sh`, as gather and the runner would."""

    name = "local"

    def __init__(self) -> None:
        self.scripts: list[str] = []

    def run(self, script: str, **_: object) -> subprocess.CompletedProcess[str]:
        self.scripts.append(script)
        return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, check=False)


def apply(commands: list[str]) -> subprocess.CompletedProcess[str]:
    """Run an op's commands the way runner._apply does: in a subshell with `set -e`."""
    script = "( set -e\n" + "\n".join(commands) + "\n)\n"
    return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, check=False)


def me() -> tuple[str, str]:
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


# ---------------------------------------------------------------------------
# Facts parsing


def test_facts_file_absent_and_empty_output() -> None:
    assert file_facts("/x").file("/x") == FileState(exists=False)
    assert file_facts("/x", "").file("/x") == FileState(exists=False)


def test_facts_file_parses_owner_group_mode_and_content() -> None:
    state = file_facts("/x", file_output(b"a\nb\n", "alice", "staff", 0o600)).file("/x")
    assert state == FileState(True, "alice", "staff", 0o600, b"a\nb\n")


def test_facts_file_empty_file() -> None:
    state = file_facts("/x", "root:root:644\n").file("/x")
    assert state.exists and state.content == b"" and state.mode == 0o644


# ---------------------------------------------------------------------------
# File


def test_file_create_when_absent() -> None:
    op = File("/etc/demo.conf", "hello\n", owner="root", group="adm", mode=0o640)
    plan = op.plan(file_facts(op.path))
    assert plan.changes
    assert plan.reason == "create"
    assert "+hello" in plan.diff
    assert plan.diff.startswith("--- /dev/null\n+++ /etc/demo.conf (wanted)\n"), plan.diff  # what check mode shows
    blob = base64.b64encode(b"hello\n").decode()
    # written in a private temp directory inside /etc, then renamed over the name (never through a link)
    assert f"printf %s {blob} | base64 -d > new" in plan.commands
    assert "chown -h root:adm new && chmod 640 new" in plan.commands
    assert "pitunnel_enter /etc /etc/demo.conf" in plan.commands
    assert 'mv -f -T new "../$n"' in plan.commands and "n=demo.conf" in plan.commands
    assert plan.backups == []  # neither validate nor notify: no backup
    assert not any(BACKUP_DIR in c for c in plan.commands)


def test_file_same_content_owner_mode_is_no_change() -> None:
    op = File("/etc/demo.conf", "hello\n")
    plan = op.plan(file_facts(op.path, file_output("hello\n")))
    assert plan.commands == []
    assert not plan.changes
    assert plan.reason == "already as wanted"
    assert plan.diff == ""


def test_file_content_change_has_diff() -> None:
    op = File("/etc/demo.conf", "one\nTWO\nthree\n")
    plan = op.plan(file_facts(op.path, file_output("one\ntwo\nthree\n")))
    assert plan.changes
    assert plan.reason == "content"
    assert "-two\n" in plan.diff and "+TWO\n" in plan.diff
    assert "/etc/demo.conf (now)" in plan.diff and "/etc/demo.conf (wanted)" in plan.diff
    assert " one\n" in plan.diff  # context line


def test_file_mode_change_only() -> None:
    op = File("/etc/demo.conf", "x\n", mode=0o600)
    plan = op.plan(file_facts(op.path, file_output("x\n", mode=0o644)))
    assert plan.changes
    assert plan.reason == "mode 644 -> 600"
    assert plan.diff == ""
    assert any("chmod 600" in c for c in plan.commands)


def test_file_owner_change_only() -> None:
    op = File("/etc/demo.conf", "x\n", owner="pitunnel", group="pitunnel")
    plan = op.plan(file_facts(op.path, file_output("x\n")))
    assert plan.reason == "owner root:root -> pitunnel:pitunnel"
    assert plan.diff == ""
    assert any(c.startswith("chown -h pitunnel:pitunnel ") for c in plan.commands)


def test_file_all_gaps_listed() -> None:
    op = File("/etc/demo.conf", "new\n", owner="a", group="b", mode=0o600)
    plan = op.plan(file_facts(op.path, file_output("old\n")))
    assert plan.reason == "content, owner root:root -> a:b, mode 644 -> 600"


def test_file_secret_hides_diff() -> None:
    op = File("/etc/nginx/auth", "user:$apr1$secrethash\n", secret=True)
    for output, now in (("ABSENT", "absent"), (file_output("user:$apr1$oldhash\n"), "19 bytes")):
        plan = op.plan(file_facts(op.path, output))
        assert plan.changes
        assert "secrethash" not in plan.diff and "oldhash" not in plan.diff
        assert plan.diff.endswith(f"(secret: {now} -> 22 bytes, content not shown)\n"), plan.diff


def test_a_secret_files_mode_change_alone_shows_no_content_change() -> None:
    """Only the mode of a secret file differs: check mode says so and shows no "(secret: ...)" content line, as
    if its bytes were about to change."""
    op = File("/etc/nginx/auth", "user:$apr1$hash\n", mode=0o600, secret=True)
    plan = op.plan(file_facts(op.path, file_output("user:$apr1$hash\n", mode=0o644)))
    assert (plan.reason, plan.diff) == ("mode 644 -> 600", "")
    assert any("chmod 600" in c for c in plan.commands)


def test_file_validate_backs_up_and_restores_on_failure() -> None:
    op = File("/etc/ssh/sshd_config.d/x.conf", "Foo yes\n", validate="sshd -t")
    plan = op.plan(file_facts(op.path))
    assert plan.backups == [op.path]
    assert plan.commands[:2] == backup_commands(op.path)
    last = plan.commands[-1]
    assert "sshd -t" in last
    assert restore_commands(op.path)[0] in last
    assert "exit 1" in last
    # the validation comes after the file is moved into place
    assert plan.commands.index('mv -f -T new "../$n"') < len(plan.commands) - 1


def test_file_notify_lists_backups() -> None:
    op = File("/etc/nginx/conf.d/p.conf", "x\n", notify=("reload nginx",))
    plan = op.plan(file_facts(op.path, file_output("y\n")))
    assert plan.backups == [op.path]
    assert plan.commands[:2] == backup_commands(op.path)
    assert not any("validation failed" in c for c in plan.commands)


def test_file_no_change_has_no_backup_even_with_notify() -> None:
    op = File("/etc/nginx/conf.d/p.conf", "x\n", notify=("reload nginx",), validate="true")
    plan = op.plan(file_facts(op.path, file_output("x\n")))
    assert plan.commands == [] and plan.backups == []


def test_file_content_function_sees_current_state() -> None:
    seen: list[FileState] = []

    def content(state: FileState) -> str:
        seen.append(state)
        return state.content.decode() + "more\n"

    op = File("/etc/x", content)
    plan = op.plan(file_facts("/etc/x", file_output("first\n")))
    assert seen == [FileState(True, "root", "root", 0o644, b"first\n")]
    assert "+more" in plan.diff


def test_backup_path_is_flat() -> None:
    assert backup_path("/etc/ssh/sshd_config.d/10-pitunnel.conf") == \
        f"{BACKUP_DIR}/etc%ssh%sshd_config.d%10-pitunnel.conf"


# ---------------------------------------------------------------------------
# managed_lines


def render(marker: str, entries: dict[str, str | None], text: str | None) -> str:
    state = FileState(False) if text is None else FileState(True, "u", "u", 0o600, text.encode())
    return managed_lines(marker, entries)(state)


def test_managed_lines_keeps_foreign_lines_and_appends_ours() -> None:
    old = "ssh-ed25519 AAAA1 alice@laptop\n# comment\nssh-rsa BBBB bob\n"
    out = render("mk-", {"a": "ssh-ed25519 KEYA mk-a"}, old)
    assert out == old + "ssh-ed25519 KEYA mk-a\n"


def test_managed_lines_replaces_ours_in_place() -> None:
    old = "first\nssh-ed25519 OLD mk-a\nlast\n"
    out = render("mk-", {"a": "ssh-ed25519 NEW mk-a"}, old)
    assert out == "first\nssh-ed25519 NEW mk-a\nlast\n"


def test_managed_lines_removes_with_none_and_drops_duplicates() -> None:
    old = "x mk-a\nkeep\nx mk-b\ny mk-b\n"
    out = render("mk-", {"a": None, "b": "z mk-b"}, old)
    assert out == "keep\nz mk-b\n"


def test_managed_lines_ignores_names_not_listed_and_other_prefixes() -> None:
    old = "k mk-other\nk notmk-a\n"
    out = render("mk-", {"a": "new mk-a"}, old)
    assert out == "k mk-other\nk notmk-a\nnew mk-a\n"


def test_managed_lines_empty_name_marker_as_used_for_the_laptop_key() -> None:
    marker = "pitunnel-laptop"
    old = "ssh-ed25519 OLD pitunnel-laptop\nssh-ed25519 MINE me@pc\n"
    out = render(marker, {"": "ssh-ed25519 NEW pitunnel-laptop"}, old)
    assert out == "ssh-ed25519 NEW pitunnel-laptop\nssh-ed25519 MINE me@pc\n"
    assert render(marker, {"": None}, old) == "ssh-ed25519 MINE me@pc\n"


def test_managed_lines_absent_file() -> None:
    assert render("mk-", {"a": "l mk-a"}, None) == "l mk-a\n"
    assert render("mk-", {"a": None}, None) == ""


def test_managed_lines_keeps_a_line_that_is_not_utf8_readable_and_blank_lines() -> None:
    state = FileState(True, "u", "u", 0o600, b"caf\xe9 latin-1 comment\n\n   \nx mk-a\n")
    assert managed_lines("mk-", {"a": "y mk-a"})(state) == "caf\ufffd latin-1 comment\n\n   \ny mk-a\n"


@pytest.mark.parametrize("old", [None, "", "a\n\nb\n", "x mk-a\nfoo\n", "x mk-a\nx mk-a\n", "no newline at end"])
@pytest.mark.parametrize("entries", [{"a": "y mk-a"}, {"a": None}, {"a": "y mk-a", "b": "z mk-b"}])
def test_managed_lines_idempotent(old: str | None, entries: dict[str, str | None]) -> None:
    once = render("mk-", entries, old)
    assert render("mk-", entries, once) == once


def test_managed_lines_via_file_op_idempotent() -> None:
    op = File("/home/pi/.ssh/authorized_keys", managed_lines("mk-", {"a": "ssh-ed25519 K mk-a"}),
              owner="pi", group="pi", mode=0o600)
    first = op.plan(file_facts(op.path, file_output("other\n", "pi", "pi", 0o600)))
    assert first.changes and "+ssh-ed25519 K mk-a" in first.diff
    again = op.plan(file_facts(op.path, file_output("other\nssh-ed25519 K mk-a\n", "pi", "pi", 0o600)))
    assert not again.changes


# ---------------------------------------------------------------------------
# Absent, Directory


def test_absent() -> None:
    op = Absent("/etc/x y")
    key = f"exists:{op.path}"
    assert op.plan(facts_of((key, "no"))).commands == []
    assert op.plan(facts_of((key, "no"))).reason == "not there"
    plan = op.plan(facts_of((key, "yes")))
    assert plan.commands == ["rm -rf '/etc/x y'"]
    assert plan.backups == []


def test_absent_with_notify_backs_up() -> None:
    op = Absent("/etc/nginx/sites-enabled/default", notify=("reload nginx",))
    plan = op.plan(facts_of((f"exists:{op.path}", "yes")))
    assert plan.backups == [op.path]
    assert plan.commands == [*backup_commands(op.path), f"rm -rf {op.path}"]


def test_directory() -> None:
    op = Directory("/var/lib/p/.ssh", owner="pitunnel", group="pitunnel", mode=0o700)
    key = f"dir:{op.path}"
    assert op.plan(facts_of((key, "directory:pitunnel:pitunnel:700"))).commands == []
    created = op.plan(facts_of((key, "ABSENT")))
    assert created.reason == "create"
    assert created.commands == ops.directory_commands(op.path, "pitunnel", "pitunnel", 0o700)
    assert "pitunnel_enter /var/lib/p/.ssh /var/lib/p/.ssh" in created.commands
    assert created.commands[-1] == "chown pitunnel:pitunnel . && chmod 700 . )"
    fixed = op.plan(facts_of((key, "directory:root:root:755")))
    assert fixed.changes
    assert fixed.reason == "directory:root:root:755 -> directory:pitunnel:pitunnel:700"


# ---------------------------------------------------------------------------
# Packages


def pkg_facts(names: tuple[str, ...], statuses: dict[str, str], age: int | None = None, ours: str = "") -> Facts:
    out = "".join(f"{n} {statuses[n]}\n" for n in names)
    found = facts_of((_pkg_fact(names), out), (record_fact("packages"), ours))
    if age is not None:
        found[APT_AGE.key] = (0, f"{age}\n")
    return found


def test_packages_installed_nothing_to_do() -> None:
    op = Packages(("autossh", "nginx"))
    plan = op.plan(pkg_facts(op.names, {"autossh": "installed", "nginx": "installed"}, age=10**9))
    assert plan.commands == [] and plan.reason == "installed"


def test_packages_missing_with_stale_lists_updates_first() -> None:
    op = Packages(("autossh", "nginx"))
    plan = op.plan(pkg_facts(op.names, {"autossh": "installed", "nginx": "not-installed"},
                             age=APT_FRESH_SECONDS + 1))
    assert len(plan.commands) == 4
    assert plan.commands[0].startswith("apt-get update")
    assert "apt-get install" in plan.commands[1]
    assert plan.commands[1].endswith(" --no-install-recommends nginx >/dev/null")  # only the missing one
    assert "autossh" not in plan.commands[1]
    assert "for n in nginx; do" in plan.commands[3] and "/var/lib/pitunnel-state/packages" in plan.commands[3]
    assert "stale" in plan.reason and "nginx" in plan.reason


def test_packages_missing_with_fresh_lists_no_update() -> None:
    op = Packages(("autossh",))
    plan = op.plan(pkg_facts(op.names, {"autossh": "config-files"}, age=60))
    assert len(plan.commands) == 3
    assert "apt-get update" not in plan.commands[0]
    assert "apt-get install" in plan.commands[0] and "autossh" in plan.commands[0]
    assert "DEBIAN_FRONTEND=noninteractive" in plan.commands[0]
    assert plan.reason == "install autossh"


def test_packages_no_lists_at_all_counts_as_stale() -> None:
    op = Packages(("autossh",))
    found = pkg_facts(op.names, {"autossh": "not-installed"})
    found[APT_AGE.key] = (0, "")
    assert op.plan(found).commands[0].startswith("apt-get update")


def test_packages_facts_include_apt_age() -> None:
    op = Packages(("autossh",))
    assert APT_AGE in op.facts()
    assert _pkg_fact(("autossh",)) in op.facts()


def test_packages_multiarch_status_does_not_crash() -> None:
    op = Packages(("libc6",))
    found = facts_of((_pkg_fact(op.names), "libc6 installed\ninstalled\n"), (APT_AGE, "5"))
    assert op.plan(found).commands == []


def test_packages_absent_purges_what_pitunnel_installed() -> None:
    op = PackagesAbsent(("nginx",))
    assert op.plan(pkg_facts(op.names, {"nginx": "not-installed"})).commands == []
    assert op.plan(pkg_facts(op.names, {"nginx": "not-installed"})).reason == "not installed"
    for status in ("installed", "config-files"):
        plan = op.plan(pkg_facts(op.names, {"nginx": status}, ours="autossh\nnginx\n"))
        assert "apt-get purge" in plan.commands[0] and "nginx" in plan.commands[0]
        assert "grep -vxF -e nginx /var/lib/pitunnel-state/packages" in plan.commands[1]
        assert plan.reason == "purge nginx"


def test_packages_absent_keeps_what_was_there_before() -> None:
    """A package pitunnel has no record of installing (the user's own Nginx) stays, with its config."""
    op = PackagesAbsent(("nginx", "autossh"))
    plan = op.plan(pkg_facts(op.names, {"nginx": "installed", "autossh": "installed"}, ours="autossh\n"))
    assert "autossh" in plan.commands[0] and "nginx" not in plan.commands[0]
    assert plan.reason.startswith("purge autossh; kept nginx: installed before pitunnel")
    kept = op.plan(pkg_facts(op.names, {"nginx": "installed", "autossh": "not-installed"}))
    assert kept.commands == [] and kept.reason.startswith("kept nginx")


# ---------------------------------------------------------------------------
# users


def user_facts(name: str, passwd: str, shadow: str = "*", ours: str = "") -> Facts:
    return facts_of((f"user:{name}", passwd), (f"shadow:{name}", shadow), (record_fact("users"), ours))


def test_system_user_create() -> None:
    op = SystemUser("pitunnel", home="/var/lib/pitunnel")
    plan = op.plan(user_facts("pitunnel", "", ""))
    assert plan.reason == "create"
    assert plan.commands[0].startswith("useradd --system --user-group --create-home --home-dir /var/lib/pitunnel ")
    assert "--shell /usr/sbin/nologin" in plan.commands[0]
    assert plan.commands[0].endswith(" pitunnel")
    assert plan.commands[1] == "usermod -p '*' pitunnel"


def test_system_user_as_wanted() -> None:
    op = SystemUser("pitunnel", home="/var/lib/pitunnel")
    entry = "pitunnel:x:999:999:pitunnel:/var/lib/pitunnel:/usr/sbin/nologin"
    plan = op.plan(user_facts("pitunnel", entry, "*"))
    assert plan.commands == [] and plan.reason == "already as wanted"


def test_system_user_shell_change() -> None:
    op = SystemUser("pitunnel", home="/var/lib/pitunnel")
    entry = "pitunnel:x:999:999:pitunnel:/var/lib/pitunnel:/bin/bash"
    plan = op.plan(user_facts("pitunnel", entry, "*"))
    assert plan.commands == ["usermod --shell /usr/sbin/nologin pitunnel"]
    assert plan.reason == "shell /bin/bash -> /usr/sbin/nologin"


def test_system_user_home_change() -> None:
    op = SystemUser("pitunnel", home="/var/lib/pitunnel")
    entry = "pitunnel:x:999:999:pitunnel:/home/pitunnel:/usr/sbin/nologin"
    plan = op.plan(user_facts("pitunnel", entry, "*"))
    assert plan.commands == ["usermod --home /var/lib/pitunnel --move-home pitunnel"]


@pytest.mark.parametrize("shadow", ["!", "!*", "", "$y$j9T$abc"])
def test_system_user_password_field_not_star(shadow: str) -> None:
    op = SystemUser("pitunnel", home="/var/lib/pitunnel")
    entry = "pitunnel:x:999:999:pitunnel:/var/lib/pitunnel:/usr/sbin/nologin"
    plan = op.plan(user_facts("pitunnel", entry, shadow))
    assert plan.commands == ["usermod -p '*' pitunnel"]
    assert "password field" in plan.reason


def test_user_absent() -> None:
    op = UserAbsent("pitunnel")
    none = op.plan(facts_of(("user:pitunnel", ""), (record_fact("users"), "")))
    assert none.commands == [] and none.reason == "not there"
    plan = op.plan(facts_of(("user:pitunnel", "pitunnel:x:999:999::/var/lib/pitunnel:/usr/sbin/nologin"),
                            (record_fact("users"), "pitunnel\n")))
    assert any(c.startswith("userdel --remove pitunnel") for c in plan.commands)
    assert any("pkill -KILL -u pitunnel" in c for c in plan.commands)
    assert any("groupdel pitunnel" in c for c in plan.commands)
    assert any("grep -vxF -e pitunnel /var/lib/pitunnel-state/users" in c for c in plan.commands)


def test_user_absent_ends_the_accounts_processes_under_set_e_even_when_there_are_none() -> None:
    """The plan's commands run under `set -e`: pkill and pgrep finding nothing (exit 1), or no such account
    (exit 2), must not fail the step before userdel (a user of no processes is the common case)."""
    plan = UserAbsent("pitunnel-no-such-account").plan(facts_of(
        ("user:pitunnel-no-such-account", "pitunnel-no-such-account:x:998:998::/nonexistent:/usr/sbin/nologin"),
        (record_fact("users"), "pitunnel-no-such-account\n")))
    ended = subprocess.run(["sh", "-ec", plan.commands[0]], capture_output=True, text=True, timeout=30)
    assert ended.returncode == 0, ended.stderr


def test_system_user_created_is_recorded() -> None:
    plan = SystemUser("pitunnel", home="/var/lib/pitunnel").plan(user_facts("pitunnel", "", ""))
    assert any("for n in pitunnel; do" in c and "/var/lib/pitunnel-state/users" in c for c in plan.commands)


@pytest.mark.parametrize("entry", ["www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin",
                                   "webapp:x:1001:1001:Web app:/home/webapp:/bin/bash",
                                   "sshd:x:100:65534::/run/sshd:/usr/sbin/nologin"])
def test_account_pitunnel_did_not_make_is_refused(entry: str) -> None:
    name = entry.split(":")[0]
    for op in (SystemUser(name, home="/var/lib/pitunnel"), UserAbsent(name)):
        with pytest.raises(Refused, match=f"account {name} exists and pitunnel did not create it"):
            op.plan(user_facts(name, entry, "*"))


@pytest.mark.parametrize(("comment", "ours"), [("pitunnel reverse tunnels", ""), ("pitunnel reverse tunnel", ""),
                                               ("pitunnel", ""), ("renamed by hand", "pitunnel\n")])
def test_account_pitunnel_made_is_accepted(comment: str, ours: str) -> None:
    """Made by this version (recorded) or by an earlier one (its comment): converged and removed as before."""
    entry = f"pitunnel:x:999:999:{comment}:/var/lib/pitunnel:/usr/sbin/nologin"
    assert SystemUser("pitunnel", home="/var/lib/pitunnel").plan(user_facts("pitunnel", entry, "*", ours)).reason \
        == "already as wanted"
    assert UserAbsent("pitunnel").plan(user_facts("pitunnel", entry, "*", ours)).changes


@pytest.mark.parametrize(("entry", "comment", "home", "shell"), [
    ("pitunnel:x:999:999:pitunnel:/var/lib/pitunnel", "pitunnel", "/var/lib/pitunnel", ""),
    ("pitunnel:x:999", "", "", ""),
    ("pitunnel:x", "", "", ""),
    ("pitunnel", "", "", ""),
])
def test_a_passwd_line_cut_short_reads_each_field_it_lacks_as_empty(entry: str, comment: str, home: str,
                                                                    shell: str) -> None:
    """A `getent passwd` line that stops early (a hand-edited /etc/passwd, an NSS module that leaves fields
    out) is still an account, and each field it does not show is "", never another field's text or a filler."""
    assert users.account(entry) == users.Account(comment, home, shell)


def test_an_account_pitunnel_made_whose_line_lacks_its_shell_gets_the_shell_set() -> None:
    """The plan says the shell it found is empty and sets it, as for any other wrong shell."""
    plan = SystemUser("pitunnel", home="/var/lib/pitunnel").plan(
        user_facts("pitunnel", "pitunnel:x:999:999:pitunnel:/var/lib/pitunnel", "*", "pitunnel\n"))
    assert plan.commands == ["usermod --shell /usr/sbin/nologin pitunnel"]
    assert plan.reason == "shell  -> /usr/sbin/nologin"


def test_an_account_of_a_name_alone_is_refused_naming_its_empty_comment_and_home() -> None:
    """An account pitunnel did not make is refused with what getent showed of it: here nothing but its name."""
    with pytest.raises(Refused, match=r"account webapp exists and pitunnel did not create it \(comment '', home \): "):
        UserAbsent("webapp").plan(user_facts("webapp", "webapp"))


# ---------------------------------------------------------------------------
# KeyPair


def test_keypair_exists_keeps_and_reads_value() -> None:
    op = KeyPair("/var/lib/pitunnel/.ssh/pitunnel_ed25519", owner="pitunnel", comment="pitunnel:pi1")
    pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIexample pitunnel:pi1"
    facts = facts_of((f"key:{op.path}", "PUB " + pub + "\n"))
    plan = op.plan(facts)
    assert plan.commands == []
    assert facts.value(op.fact).public == pub and facts.value(op.fact).kept


def test_keypair_absent_generates_as_owner() -> None:
    op = KeyPair("/var/lib/pitunnel/.ssh/pitunnel_ed25519", owner="pitunnel", comment="pitunnel:pi1")
    facts = facts_of((f"key:{op.path}", "ABSENT"))
    plan = op.plan(facts)
    assert facts.value(op.fact) == ops.KeyState(private=False, public=None)
    assert plan.commands[:-1] == ops.directory_commands("/var/lib/pitunnel/.ssh", "pitunnel", "pitunnel", 0o700)
    keygen = plan.commands[-1]
    assert keygen.startswith("runuser -u pitunnel -- ssh-keygen ")
    assert "-t ed25519" in keygen and "-N ''" in keygen
    assert "-C pitunnel:pi1" in keygen and keygen.endswith("-f /var/lib/pitunnel/.ssh/pitunnel_ed25519")


def test_keypair_private_without_pub_is_not_taken_as_a_key(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("PRIVATE\n")
    op = KeyPair(str(key), owner="nobody", comment="c")
    facts = gather(LocalShell(), op.facts())
    plan = op.plan(facts)
    assert plan.changes and not facts.value(op.fact).kept


# ---------------------------------------------------------------------------
# Service


@pytest.mark.parametrize("enabled,running,now,expected", [
    (True, True, "enabled\nactive\n", []),
    (True, True, "disabled\ninactive\n", ["enable", "start"]),
    (True, True, "enabled\ninactive\n", ["start"]),
    (True, True, "disabled\nactive\n", ["enable"]),
    (True, True, "not-found\ninactive\n", ["enable", "start"]),
    (False, False, "enabled\nactive\n", ["disable", "stop"]),
    (False, False, "disabled\ninactive\n", []),
    (False, False, "not-found\ninactive\n", []),
    (False, False, "", []),
    (True, False, "enabled\nactive\n", ["stop"]),
    (False, True, "enabled\ninactive\n", ["disable", "start"]),
])
def test_service(enabled: bool, running: bool, now: str, expected: list[str]) -> None:
    op = Service("pitunnel.service", enabled=enabled, running=running)
    plan = op.plan(facts_of(("unit:pitunnel.service", now)))
    if not expected:
        assert plan.commands == []
        return
    # one reload of systemd's view of unit files: enable/disable do it themselves, else an explicit one
    reloads = [c for c in plan.commands if c == "systemctl daemon-reload"]
    assert len(reloads) == (0 if {"enable", "disable"} & set(expected) else 1)
    if reloads:
        assert plan.commands[0] == "systemctl daemon-reload"
    acts = [c for c in plan.commands if c not in reloads]
    assert [c.split()[1] for c in acts] == expected
    assert all(c.endswith(" pitunnel.service") for c in acts)
    assert plan.reason == ", ".join(expected)


@pytest.mark.parametrize("now,covers", [
    ("disabled\ninactive\n", True),   # first install: it starts from the new files
    ("enabled\nfailed\n", True),
    ("not-found\ninactive\n", True),
    ("enabled\nactivating\n", False),  # may still be starting from the old files
    ("enabled\nactive\n", False),      # running: only a restart picks the change up
    ("disabled\nactive\n", False),
])
def test_service_start_covers_its_restart_handler(now: str, covers: bool) -> None:
    op = Service("pitunnel.service", covers=("restart tunnel",))
    assert op.plan(facts_of(("unit:pitunnel.service", now))).covers == (("restart tunnel",) if covers else ())


def test_covered_handler_needs_the_start_after_every_notifier() -> None:
    unit = File("/etc/systemd/system/t.service", "x", notify=("restart tunnel",))
    conf = File("/etc/pitunnel/ssh_config", "y", notify=("restart tunnel",))
    start = Service("t.service", covers=("restart tunnel",))
    started = Plan(["systemctl start t.service"], "start", covers=("restart tunnel",))
    written = Plan(["write"], "create")
    handler = Handler("restart tunnel", ["systemctl restart t.service"])
    assert covered(handler, [(unit, written), (start, started)]) is started
    # a file written after the start still needs the restart
    assert covered(handler, [(unit, written), (start, started), (conf, written)]) is None
    # nothing started: the handler runs
    assert covered(handler, [(unit, written)]) is None
    # a handler with a check after it always runs
    checked = Handler("restart tunnel", ["systemctl restart t.service"], verify=lambda: True)
    assert covered(checked, [(unit, written), (start, started)]) is None


def test_service_no_change_reason() -> None:
    op = Service("x.service")
    assert op.plan(facts_of(("unit:x.service", "enabled\nactive"))).reason == "enabled, active"


# ---------------------------------------------------------------------------
# Symlink, Pruned


def test_symlink() -> None:
    op = Symlink("/etc/nginx/sites-enabled/default", "/etc/nginx/sites-available/default")
    key = f"link:{op.path}"
    assert op.plan(facts_of((key, f"{op.target}\ntarget-ok"))).reason == "already linked"
    assert not op.plan(facts_of((key, f"{op.target}\ntarget-missing"))).changes
    skipped = op.plan(facts_of((key, "ABSENT\ntarget-missing")))
    assert not skipped.changes and "is not there" in skipped.reason
    plan = op.plan(facts_of((key, "ABSENT\ntarget-ok")))
    assert plan.commands == [f"ln -sfn {op.target} {op.path}"]
    wrong = op.plan(facts_of((key, "/somewhere/else\ntarget-ok")))
    assert wrong.commands == [f"ln -sfn {op.target} {op.path}"]


def test_symlink_without_only_if_exists_and_with_notify() -> None:
    op = Symlink("/a/link", "/a/target", only_if_exists=False, notify=("h",))
    plan = op.plan(facts_of((f"link:{op.path}", "ABSENT\ntarget-missing")))
    assert plan.commands == [*backup_commands("/a/link"), "ln -sfn /a/target /a/link"]
    assert plan.backups == ["/a/link"]


def test_pruned() -> None:
    op = Pruned("/etc/nginx/sites-enabled", "pitunnel-*.conf", frozenset({"pitunnel-pi1-web.conf"}))
    key = f"ls:{op.directory}/{op.pattern}"
    assert op.plan(facts_of((key, ""))).reason == "none"
    assert op.plan(facts_of((key, "pitunnel-pi1-web.conf\n"))).commands == []
    plan = op.plan(facts_of((key, "pitunnel-pi1-web.conf\npitunnel-old.conf\n")))
    assert plan.commands == ["rm -f /etc/nginx/sites-enabled/pitunnel-old.conf"]
    assert plan.reason == "remove pitunnel-old.conf"
    assert plan.backups == []


def test_pruned_with_notify_backs_up_each() -> None:
    op = Pruned("/d", "*.conf", frozenset(), notify=("h",))
    plan = op.plan(facts_of(("ls:/d/*.conf", "a.conf\nb.conf\n")))
    assert plan.backups == ["/d/a.conf", "/d/b.conf"]
    assert plan.commands == [*backup_commands("/d/a.conf"), *backup_commands("/d/b.conf"),
                             "rm -f /d/a.conf", "rm -f /d/b.conf"]


def test_pruned_fact_lists_matches_locally(tmp_path: Path) -> None:
    for name in ("a.conf", "b.conf", "c.txt"):
        (tmp_path / name).write_text("x")
    op = Pruned(str(tmp_path), "*.conf", frozenset({"a.conf"}))
    plan = op.plan(gather(LocalShell(), op.facts()))
    assert plan.commands == [f"rm -f {tmp_path}/b.conf"]
    empty = Pruned(str(tmp_path / "nothing-here"), "*.conf", frozenset())
    assert not empty.plan(gather(LocalShell(), empty.facts())).changes


# ---------------------------------------------------------------------------
# Observe, SshdPasswordsCheck


def test_observe_describes_the_parsed_value_and_changes_nothing() -> None:
    op = Observe(LISTENERS, lambda v: f"{len(v)} listeners", title="listeners")
    facts = facts_of((LISTENERS, "LISTEN 0 128 127.0.0.1:20000 0.0.0.0:*\nLISTEN 0 128 [::]:22 [::]:*"))
    plan = op.plan(facts)
    assert plan.commands == []
    assert plan.reason == "2 listeners"
    assert facts.value(LISTENERS) == frozenset({"127.0.0.1:20000", "[::]:22"})
    assert op.facts() == [LISTENERS] and not hasattr(op, "value")


def test_a_fact_is_parsed_once_per_reading() -> None:
    calls: list[str] = []
    fact = Fact("counted", "true", lambda out: calls.append(out) or len(calls))
    facts = facts_of((fact, "x"))
    assert (facts.value(fact), facts.value(fact), calls) == (1, 1, ["x"])


def test_sshd_passwords_check() -> None:
    op = SshdPasswordsCheck()
    on = op.plan(facts_of(("sshd-passwords", "passwordauthentication yes\nkbdinteractiveauthentication no\n"
                                             "permitrootlogin prohibit-password")))
    assert on.commands == [] and on.reason.startswith("WARNING")
    off = op.plan(facts_of(("sshd-passwords", "passwordauthentication no\npermitrootlogin no")))
    assert off.commands == [] and off.reason == "passwords refused"
    assert op.plan(facts_of(("sshd-passwords", ""))).reason == "passwords refused"


# ---------------------------------------------------------------------------
# gather, with the fact scripts run by a real local shell


def test_gather_file_facts_agree_with_parser(tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.write_bytes(b"line one\nline two\n")
    text.chmod(0o640)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    empty.chmod(0o600)
    binary = tmp_path / "with space"
    binary.write_bytes(bytes(range(256)) * 3)
    nolf = tmp_path / "nolf"
    nolf.write_bytes(b"no newline")
    missing = tmp_path / "missing"
    shell = LocalShell()
    paths = [text, empty, binary, nolf, missing]
    found = gather(shell, [file_fact(str(p)) for p in paths] + [file_fact(str(text))])  # duplicate fact once
    assert len(shell.scripts) == 1  # one round trip
    owner, group = me()
    assert found.file(str(text)) == FileState(True, owner, group, 0o640, b"line one\nline two\n")
    assert found.file(str(empty)) == FileState(True, owner, group, 0o600, b"")
    assert found.file(str(binary)).content == bytes(range(256)) * 3
    assert found.file(str(nolf)).content == b"no newline"
    assert found.file(str(missing)) == FileState(exists=False)
    assert set(found) == {file_fact(str(p)).key for p in paths}


def test_many_file_facts_are_read_in_one_tar_exactly_as_one_by_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From BATCH_FILES_FROM file facts on, gather reads the files in one tar (issue 27): each FileState the same
    as the per-file script's, for a plain file, an empty one, binary bytes, odd modes, a symbolic link (never
    read through), a hard link, a directory and a missing path; a secret file is still read alone."""
    from pitunnel import facts as facts_module

    paths = []
    for i in range(facts_module.BATCH_FILES_FROM):
        p = tmp_path / f"site {i}.conf"
        p.write_bytes(f"server {i};\n".encode() * i)
        p.chmod(0o600 + i % 64)
        paths.append(p)
    (tmp_path / "binary").write_bytes(bytes(range(256)))
    (tmp_path / "setuid").write_text("x")
    (tmp_path / "setuid").chmod(0o4755)
    (tmp_path / "link").symlink_to("/etc/shadow")
    (tmp_path / "hard").hardlink_to(paths[5])
    (tmp_path / "folder").mkdir()
    paths += [tmp_path / n for n in ("binary", "setuid", "link", "hard", "folder", "missing")]
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    asked = [file_fact(str(p)) for p in paths] + [file_fact(str(secret), secret=True)]
    shell = LocalShell()
    batched = gather(shell, asked)
    assert "tar --no-recursion" in shell.scripts[0] and shell.scripts[0].count("base64 -w0") == 2  # the tar, the secret
    monkeypatch.setattr(facts_module, "BATCH_FILES_FROM", 10_000)
    alone = gather(LocalShell(), asked)
    assert {k: batched.file(k[5:]) for k in alone} == {k: alone.file(k[5:]) for k in alone}
    assert batched.file(str(tmp_path / "link")) == FileState(True, symlink="/etc/shadow")
    assert batched.file(str(tmp_path / "hard")).content == paths[5].read_bytes()
    assert batched.file(str(tmp_path / "setuid")).mode == 0o4755
    assert batched.file(str(tmp_path / "folder")) == FileState(exists=False) == batched.file(str(tmp_path / "missing"))


def test_a_tar_that_comes_back_unreadable_is_the_hosts_fault_said_so() -> None:
    from pitunnel import facts as facts_module
    from pitunnel.remote import HostCannotRun

    class Garbled(LocalShell):
        def run(self, script: str, **_: object) -> subprocess.CompletedProcess[str]:
            return super().run(script.replace("| gzip -1 | base64 -w0", "| head -c 3"))

    asked = [file_fact(f"/nonexistent/{i}") for i in range(facts_module.BATCH_FILES_FROM)]
    with pytest.raises(HostCannotRun, match="the files read in one tar came back unreadable"):
        gather(Garbled(), asked)


def test_gather_command_facts_rc_and_output() -> None:
    facts = [command_fact("a", "echo hello"), command_fact("b", "printf 'no newline'"),
             command_fact("c", "echo out; echo err >&2; exit 3"), command_fact("d", "true"),
             command_fact("e", "printf 'x\\n\\n\\n'")]
    found = gather(LocalShell(), facts)
    assert found["a"] == (0, "hello")
    assert found["b"] == (0, "no newline")
    assert found["c"][0] == 3 and found["c"][1].split("\n") == ["out", "err"]
    assert found["d"] == (0, "")
    assert found["e"] == (0, "x\n\n")


def test_a_line_in_a_facts_output_that_looks_like_a_section_end_does_not_stop_the_other_facts() -> None:
    """A command's output may hold a line like the script's own `@@RC` marker (a log line, a file shown as it is):
    the read goes on, and the facts after it are read as they are."""
    found = gather(LocalShell(), [command_fact("a", "echo '@@RC 0 5'; echo more"), command_fact("b", "echo b")])
    assert found["b"] == (0, "b")


def test_gather_gives_its_timeout_to_the_read_with_a_secret_fact_as_without() -> None:
    """`timeout` (verify's probes take their time) holds for a read with a secret file in it too, whose output -v
    masks: the one read is asked for both."""
    asked: list[dict[str, object]] = []

    class Recording(LocalShell):
        def run(self, script: str, **kw: object) -> subprocess.CompletedProcess[str]:
            asked.append(kw)
            return super().run(script)

    gather(Recording(), [file_fact("/nonexistent/htpasswd", secret=True)], timeout=120)
    gather(Recording(), [file_fact("/nonexistent/plain")], timeout=120)
    assert [kw.get("timeout") for kw in asked] == [120, 120] and callable(asked[0]["mask"]) and "mask" not in asked[1]


def test_gather_nothing_runs_nothing() -> None:
    shell = LocalShell()
    assert gather(shell, []) == {}
    assert shell.scripts == []


def test_gather_missing_fact_raises() -> None:
    class Broken:
        name = "h"

        def run(self, script: str) -> subprocess.CompletedProcess[str]:
            return subprocess.CompletedProcess([], 1, "", "boom")

    with pytest.raises(HostCannotRun, match=r"^h stopped the fact script before a: boom \(is / read-only or /tmp full on h\?\)$"):
        gather(Broken(), [command_fact("a", "true")])


def test_gather_real_facts_for_other_ops(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o750)
    (tmp_path / "d").chmod(0o750)
    (tmp_path / "target").write_text("t")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    owner, group = me()
    directory = Directory(str(tmp_path / "d"), owner=owner, group=group, mode=0o750)
    new_dir = Directory(str(tmp_path / "new"), owner=owner, group=group)
    absent_yes = Absent(str(tmp_path / "target"))
    absent_no = Absent(str(tmp_path / "nope"))
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    absent_dangling = Absent(str(dangling))
    link_ok = Symlink(str(tmp_path / "link"), str(tmp_path / "target"))
    link_new = Symlink(str(tmp_path / "link2"), str(tmp_path / "target"))
    all_ops = [directory, new_dir, absent_yes, absent_no, absent_dangling, link_ok, link_new]
    found = gather(LocalShell(), [f for op in all_ops for f in op.facts()])
    assert not directory.plan(found).changes
    assert new_dir.plan(found).reason == "create"
    assert absent_yes.plan(found).changes
    assert not absent_no.plan(found).changes
    assert absent_dangling.plan(found).changes  # a dangling link is still something to remove
    assert not link_ok.plan(found).changes
    assert link_new.plan(found).changes


# ---------------------------------------------------------------------------
# File ops applied for real on the local filesystem


def test_file_apply_locally_then_idempotent(tmp_path: Path) -> None:
    owner, group = me()
    path = str(tmp_path / "sub dir" / "demo.conf")
    op = File(path, "hello\nworld\n", owner=owner, group=group, mode=0o640)
    shell = LocalShell()
    plan = op.plan(gather(shell, op.facts()))
    assert plan.reason == "create"
    result = apply(plan.commands)
    assert result.returncode == 0, result.stderr
    assert Path(path).read_text() == "hello\nworld\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert not Path(path + ".pitunnel-tmp").exists()
    again = op.plan(gather(shell, op.facts()))
    assert again.commands == [] and again.reason == "already as wanted"

    # change content and mode, apply, and converge again
    op2 = File(path, "changed\n", owner=owner, group=group, mode=0o600)
    plan2 = op2.plan(gather(shell, op2.facts()))
    assert plan2.reason == "content, mode 640 -> 600"
    assert apply(plan2.commands).returncode == 0
    assert Path(path).read_text() == "changed\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not op2.plan(gather(shell, op2.facts())).changes


def test_file_apply_locally_empty_and_binary_like_content(tmp_path: Path) -> None:
    owner, group = me()
    for name, content in (("empty", ""), ("unicode", "häßlich ✓ 'quotes' \"dq\" $HOME `x`\n")):
        path = str(tmp_path / name)
        op = File(path, content, owner=owner, group=group, mode=0o644)
        assert apply(op.plan(gather(LocalShell(), op.facts())).commands).returncode == 0
        assert Path(path).read_text() == content
        assert not op.plan(gather(LocalShell(), op.facts())).changes


def test_file_managed_lines_apply_locally_idempotent(tmp_path: Path) -> None:
    owner, group = me()
    path = tmp_path / "authorized_keys"
    path.write_text("ssh-ed25519 MINE me@pc\n")
    path.chmod(0o600)
    op = File(str(path), managed_lines("pitunnel-laptop", {"": "ssh-ed25519 LAPTOP pitunnel-laptop"}),
              owner=owner, group=group, mode=0o600)
    assert apply(op.plan(gather(LocalShell(), op.facts())).commands).returncode == 0
    assert path.read_text() == "ssh-ed25519 MINE me@pc\nssh-ed25519 LAPTOP pitunnel-laptop\n"
    assert not op.plan(gather(LocalShell(), op.facts())).changes


@pytest.fixture
def backup_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "backups"
    monkeypatch.setattr(shell, "BACKUP_DIR", str(directory))
    return directory


def test_file_validate_failure_restores_old_file_locally(tmp_path: Path, backup_dir: Path) -> None:
    owner, group = me()
    path = tmp_path / "conf"
    path.write_text("old\n")
    path.chmod(0o644)
    op = File(str(path), "new\n", owner=owner, group=group, mode=0o644, validate=f"grep -q old {path}")
    plan = op.plan(gather(LocalShell(), op.facts()))
    result = apply(plan.commands)
    assert result.returncode != 0
    assert "validation failed" in result.stderr
    assert path.read_text() == "old\n"


def test_file_validate_failure_removes_new_file_locally(tmp_path: Path, backup_dir: Path) -> None:
    owner, group = me()
    path = tmp_path / "conf"
    op = File(str(path), "new\n", owner=owner, group=group, validate="false")
    result = apply(op.plan(gather(LocalShell(), op.facts())).commands)
    assert result.returncode != 0
    assert not path.exists()


def test_file_validate_success_keeps_new_file_and_restore_brings_old_back(tmp_path: Path, backup_dir: Path) -> None:
    owner, group = me()
    path = tmp_path / "conf"
    path.write_text("old\n")
    path.chmod(0o644)
    op = File(str(path), "new\n", owner=owner, group=group, mode=0o644, validate="true", notify=("h",))
    plan = op.plan(gather(LocalShell(), op.facts()))
    assert apply(plan.commands).returncode == 0
    assert path.read_text() == "new\n"
    # what the runner does when a later op or the handler fails
    assert apply([c for p in plan.backups for c in restore_commands(p)]).returncode == 0
    assert path.read_text() == "old\n"


def test_backup_ignores_stale_absent_marker(tmp_path: Path, backup_dir: Path) -> None:
    path = tmp_path / "conf"
    # run 1: the file did not exist; its backup says so, and the run ended before dropping the backup
    assert apply(backup_commands(str(path))).returncode == 0
    path.write_text("good\n")
    # run 2: a change to the (now existing) file is backed up, then must be rolled back
    assert apply(backup_commands(str(path))).returncode == 0
    path.write_text("bad\n")
    assert apply(restore_commands(str(path))).returncode == 0
    assert path.exists() and path.read_text() == "good\n"


def test_verbose_output_of_a_read_holds_back_each_secret_section_and_counts_it() -> None:
    from pitunnel.facts import masked
    show = masked({1, 3})
    said = [show(line) for line in ["@@FACT 0", "open", "@@RC 0 0",
                                    "@@FACT 1", "c2VjcmV0", "ab", "@@RC 1 0",
                                    "@@FACT 2", "seen", "@@RC 2 0",
                                    "@@FACT 3", "x", "@@RC 3 1", "after"]]
    assert said == ["@@FACT 0", "open", "@@RC 0 0",
                    "@@FACT 1", None, None, "@@RC 1 0 (secret: 12 bytes of output not shown)",  # 8+1 and 2+1
                    "@@FACT 2", "seen", "@@RC 2 0",
                    "@@FACT 3", None, "@@RC 3 1 (secret: 2 bytes of output not shown)", "after"]


def test_a_command_facts_value_is_its_output_as_it_is() -> None:
    fact = command_fact("uname", "uname -a")
    assert (fact.key, fact.script, fact.process(" Linux pi 6.1\n\n")) == ("uname", "uname -a", " Linux pi 6.1\n\n")


def test_a_symbolic_link_where_a_file_goes_fails_the_op_with_its_reason_alone(tmp_path: Path) -> None:
    """The path is a symbolic link: the op's commands, run as the runner runs them, exit 1 and say only why,
    naming the link and where it points; the link's target is never written."""
    owner, group = me()
    target = tmp_path / "shadow"
    target.write_text("root:x:\n")
    path = tmp_path / "conf"
    path.symlink_to(target)
    op = File(str(path), "new\n", owner=owner, group=group)
    plan = op.plan(gather(LocalShell(), op.facts()))
    assert plan.reason == f"a symbolic link to {target}: refused"
    result = apply(plan.commands)
    assert result.returncode == 1
    assert result.stderr == (f"refusing to write {path}: it is a symbolic link (to {target}), and pitunnel replaces "
                             "only regular files: remove the link and run again\n")
    assert target.read_text() == "root:x:\n" and path.is_symlink()


def test_a_directory_where_a_file_goes_is_refused_naming_the_path_exactly(tmp_path: Path) -> None:
    """A directory stands where the file goes (the fact reads it as no file): the write refuses, and its message
    names the path as it is, whatever shell characters it holds ($, quotes, backquotes, backslashes): none is
    expanded, run or doubled."""
    owner, group = me()
    path = tmp_path / 'odd $HOME "X" `echo run` \\ end'
    path.mkdir()
    op = File(str(path), "new\n", owner=owner, group=group)
    plan = op.plan(gather(LocalShell(), op.facts()))
    assert plan.reason == "create"
    result = apply(plan.commands)
    assert result.returncode == 1
    assert result.stderr == f"refusing to write {path}: it is a directory\n"
    assert path.is_dir() and list(path.iterdir()) == []


def test_a_file_is_written_at_exactly_its_path_whatever_its_name_ends_in(tmp_path: Path) -> None:
    """A name that ends in a space or in an X is the name written: not a shorter name beside it."""
    owner, group = me()
    for name in ("ends in a space ", "endsX"):
        op = File(str(tmp_path / name), f"{name}\n", owner=owner, group=group)
        result = apply(op.plan(gather(LocalShell(), op.facts())).commands)
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ends in a space ", "endsX"]
    assert (tmp_path / "endsX").read_text() == "endsX\n"


def test_two_files_whose_names_differ_by_a_last_x_keep_their_own_backups(tmp_path: Path, backup_dir: Path) -> None:
    """`conf` and `confX` changed in one run: restoring each brings back its own old content."""
    owner, group = me()
    plans = []
    for name in ("conf", "confX"):
        (tmp_path / name).write_text(f"old {name}\n")
        op = File(str(tmp_path / name), "new\n", owner=owner, group=group, notify=("reload",))
        plans.append(op.plan(gather(LocalShell(), op.facts())))
    assert all(apply(plan.commands).returncode == 0 for plan in plans)
    assert apply([c for plan in plans for p in plan.backups for c in restore_commands(p)]).returncode == 0
    assert [(tmp_path / name).read_text() for name in ("conf", "confX")] == ["old conf\n", "old confX\n"]


def test_a_link_to_a_file_gone_is_backed_up_as_something_there_not_as_nothing(tmp_path: Path, backup_dir: Path) -> None:
    """A Symlink op with a handler replaces a link whose target is gone: its backup takes that link for something
    that was there (not for nothing), so a rollback never deletes the link."""
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "gone")
    op = Symlink(str(link), str(tmp_path / "new"), only_if_exists=False, notify=("reload",))
    plan = op.plan(gather(LocalShell(), op.facts()))
    assert apply(plan.commands).returncode == 0 and os.readlink(link) == str(tmp_path / "new")
    assert apply([c for p in plan.backups for c in restore_commands(p)]).returncode == 0
    assert link.is_symlink()


def test_a_rollback_puts_back_a_link_to_a_file_gone(tmp_path: Path, backup_dir: Path) -> None:
    """What a rollback should do with the link above: point it where it pointed before."""
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "gone")
    op = Symlink(str(link), str(tmp_path / "new"), only_if_exists=False, notify=("reload",))
    plan = op.plan(gather(LocalShell(), op.facts()))
    assert apply(plan.commands).returncode == 0
    assert apply([c for p in plan.backups for c in restore_commands(p)]).returncode == 0
    assert os.readlink(link) == str(tmp_path / "gone")
