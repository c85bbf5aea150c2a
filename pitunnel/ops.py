"""Operations: each reads facts, compares them with what is wanted, and plans only the commands
that close the gap, or says in one line why nothing is needed (pyinfra's model).

Planning is pure: it never touches a host. The runner gathers facts, plans, and applies.
"""

from __future__ import annotations

import base64
import difflib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .facts import Fact, Facts, FileState, command_fact, file_fact

BACKUP_DIR = "/var/backups/pitunnel"
# What pitunnel itself made on a host, recorded when it made it: `users` and `packages`, one name a line.
# Teardown removes and purges only what is recorded there (or, for accounts made by earlier versions,
# marked with one of pitunnel's comments), never what was on the host before.
STATE_DIR = "/var/lib/pitunnel-state"
OWN_COMMENTS = ("pitunnel", "pitunnel reverse tunnel", "pitunnel reverse tunnels")
APT_FRESH_SECONDS = 6 * 3600
# What `apt-get update` fetches before an install: the package lists only, gzip-compressed. Measured
# on a lab host (Debian 12, one source): 2.1 CPU s by default, 1.55 s without the translations of
# package descriptions (which an install never reads), 1.1 s with gzip instead of xz lists too. A Pi's
# CPU is slow and it pays this once per fresh host; the gzip lists are a few MB more to download.
APT_UPDATE_OPTIONS = "-o Acquire::Languages=none -o Acquire::CompressionTypes::Order::=gz"


class Refused(Exception):
    """An op will not touch something pitunnel did not make: the host's step fails before any change."""


@dataclass
class Plan:
    commands: list[str]
    reason: str  # one line: what will change, or why nothing needs to
    diff: str = ""
    backups: list[str] = field(default_factory=list)  # paths backed up before change, for rollback
    covers: tuple[str, ...] = ()  # handlers this change makes unneeded when it runs after what notified them

    @property
    def changes(self) -> bool:
        return bool(self.commands)


class Op:
    title: str = ""
    notify: tuple[str, ...] = ()

    def facts(self) -> list[Fact]:
        raise NotImplementedError

    def plan(self, facts: Facts) -> Plan:
        raise NotImplementedError


def q(text: str) -> str:
    return shlex.quote(text)


def backup_path(path: str) -> str:
    return f"{BACKUP_DIR}/{path.strip('/').replace('/', '%')}"


def backup_commands(path: str) -> list[str]:
    """Keep the old file (or the fact that there was none) so a failed change can be undone."""
    b = q(backup_path(path))
    return [f"mkdir -p {BACKUP_DIR} && chmod 700 {BACKUP_DIR}",
            f"if [ -e {q(path)} ] || [ -L {q(path)} ]; then rm -f {b}.absent; cp -a {q(path)} {b}; "
            f"else rm -rf {b}; : > {b}.absent; fi"]


def restore_commands(path: str) -> list[str]:
    b = q(backup_path(path))
    return [f"if [ -e {b}.absent ]; then rm -f {q(path)} {b}.absent; elif [ -e {b} ]; then mv -f {b} {q(path)}; fi"]


def drop_backup_commands(path: str) -> list[str]:
    b = q(backup_path(path))
    return [f"rm -f {b} {b}.absent"]


# ------------------------------------------------------------------ files
@dataclass
class File(Op):
    """A whole file with this content, owner and mode. `validate` runs after install (with the
    file in place); if it fails the old file comes back and the op fails."""

    path: str
    content: str | Callable[[FileState], str]
    owner: str = "root"
    group: str = "root"
    mode: int = 0o644
    validate: str | None = None
    notify: tuple[str, ...] = ()
    secret: bool = False
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"file {self.path}"

    def facts(self) -> list[Fact]:
        return [file_fact(self.path)]

    def wanted(self, state: FileState) -> str:
        return self.content(state) if callable(self.content) else self.content

    def plan(self, facts: Facts) -> Plan:
        state = facts.file(self.path)
        new = self.wanted(state).encode()
        gaps = []
        if not state.exists:
            gaps.append("create")
        else:
            if state.content != new:
                gaps.append("content")
            if (state.owner, state.group) != (self.owner, self.group):
                gaps.append(f"owner {state.owner}:{state.group} -> {self.owner}:{self.group}")
            if state.mode != self.mode:
                gaps.append(f"mode {state.mode:o} -> {self.mode:o}")
        if not gaps:
            return Plan([], "already as wanted")
        diff = self._diff(state, new) if (not state.exists or state.content != new) else ""
        commands = []
        backups = []
        if self.validate or self.notify:
            commands += backup_commands(self.path)
            backups.append(self.path)
        blob = base64.b64encode(new).decode()
        tmp = f"{self.path}.pitunnel-tmp"
        commands += [
            f"mkdir -p {q(self.path.rsplit('/', 1)[0] or '/')}",
            f"printf %s {blob} | base64 -d > {q(tmp)}",
            f"chown {q(self.owner)}:{q(self.group)} {q(tmp)} && chmod {self.mode:o} {q(tmp)}",
            f"mv -f {q(tmp)} {q(self.path)}",
        ]
        if self.validate:
            restore = "; ".join(restore_commands(self.path))
            commands.append(f"if ! out=$({self.validate} 2>&1); then {restore}; "
                            f"echo \"validation failed ({self.validate}), old file restored: $out\" >&2; exit 1; fi")
        return Plan(commands, ", ".join(gaps), diff, backups)

    def _diff(self, state: FileState, new: bytes) -> str:
        if self.secret:
            return f"--- {self.path}\n+++ {self.path}\n(content hidden: it holds secrets)\n"
        old = state.content.decode(errors="replace").splitlines(keepends=True) if state.exists else []
        return "".join(difflib.unified_diff(old, new.decode().splitlines(keepends=True),
                                            f"{self.path} (now)" if state.exists else "/dev/null",
                                            f"{self.path} (wanted)"))


def managed_lines(marker_prefix: str, entries: dict[str, str | None]) -> Callable[[FileState], str]:
    """Content function: keep every line not ours; our lines end in "<marker_prefix><name>".
    entries: name -> line (None removes that name's line). Order of others is kept."""

    def render(state: FileState) -> str:
        old = state.content.decode(errors="replace").splitlines() if state.exists else []
        out: list[str] = []
        seen: set[str] = set()
        for line in old:
            ours = _marker_of(line, marker_prefix)
            if ours is None or ours not in entries:
                out.append(line)
            elif entries[ours] is not None and ours not in seen:
                out.append(entries[ours] or "")
                seen.add(ours)
        for name, wanted in entries.items():
            if wanted is not None and name not in seen:
                out.append(wanted)
        return "\n".join(out) + "\n" if out else ""

    return render


def _marker_of(line: str, prefix: str) -> str | None:
    last = line.rsplit(None, 1)[-1] if line.strip() else ""
    return last[len(prefix):] if last.startswith(prefix) else None


@dataclass
class Absent(Op):
    """No file (or directory tree) at this path."""

    path: str
    notify: tuple[str, ...] = ()
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"absent {self.path}"

    def facts(self) -> list[Fact]:
        return [command_fact(f"exists:{self.path}", f"[ -e {q(self.path)} ] || [ -L {q(self.path)} ] && echo yes || echo no")]

    def plan(self, facts: Facts) -> Plan:
        if facts[f"exists:{self.path}"][1].strip() != "yes":
            return Plan([], "not there")
        backups = [self.path] if self.notify else []
        pre = backup_commands(self.path) if self.notify else []
        return Plan([*pre, f"rm -rf {q(self.path)}"], "remove", backups=backups)


@dataclass
class Directory(Op):
    path: str
    owner: str = "root"
    group: str = "root"
    mode: int = 0o755
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"directory {self.path}"

    def facts(self) -> list[Fact]:
        return [command_fact(f"dir:{self.path}", f"stat -c '%F:%U:%G:%a' {q(self.path)} 2>/dev/null || echo ABSENT")]

    def plan(self, facts: Facts) -> Plan:
        now = facts[f"dir:{self.path}"][1].strip()
        want = f"directory:{self.owner}:{self.group}:{self.mode:o}"
        if now == want:
            return Plan([], "already as wanted")
        cmds = [f"mkdir -p {q(self.path)}", f"chown {q(self.owner)}:{q(self.group)} {q(self.path)}",
                f"chmod {self.mode:o} {q(self.path)}"]
        return Plan(cmds, "create" if now == "ABSENT" else f"{now} -> {want}")


# ------------------------------------------------------------------ packages
def _pkg_fact(names: Sequence[str]) -> Fact:
    joined = " ".join(q(n) for n in names)
    return command_fact(f"pkgs:{joined}", f"for p in {joined}; do s=$(dpkg-query -W -f '${{db:Status-Status}} ' $p "
                        "2>/dev/null) || s=not-installed; echo \"$p $s\"; done")


def _pkg_status(output: str) -> dict[str, tuple[str, ...]]:
    """name -> dpkg status words (several for a package installed for several architectures)."""
    return {words[0]: tuple(words[1:]) for words in (line.split() for line in output.splitlines()) if words}


APT_AGE = command_fact("apt-lists-age", "now=$(date +%s); newest=$(stat -c %Y /var/lib/apt/lists/*_Packages "
                       "2>/dev/null | sort -n | tail -1); echo $(( now - ${newest:-0} ))")


def apt_install_commands(names: Sequence[str], *, update: bool) -> list[str]:
    """Install `names` (no recommends, no questions), after fetching the package lists if `update`."""
    install = ("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
               + " ".join(q(n) for n in names) + " >/dev/null")
    return [f"apt-get update -q {APT_UPDATE_OPTIONS} >/dev/null", install] if update else [install]


def record_fact(kind: str) -> Fact:
    """The names recorded in STATE_DIR/kind (what pitunnel made of that kind on this host)."""
    return command_fact(f"record:{kind}", f"cat {STATE_DIR}/{kind} 2>/dev/null || true")


def recorded(facts: Facts, kind: str) -> set[str]:
    return set(facts.output(record_fact(kind)).split())


def record_commands(kind: str, names: Sequence[str]) -> list[str]:
    """Add `names` to STATE_DIR/kind (root-only: nobody else can claim something is pitunnel's)."""
    path = q(f"{STATE_DIR}/{kind}")
    return [f"mkdir -p {STATE_DIR} && chmod 700 {STATE_DIR}",
            f"for n in {' '.join(q(n) for n in names)}; do grep -qxF \"$n\" {path} 2>/dev/null || "
            f"echo \"$n\" >> {path}; done"]


def unrecord_commands(kind: str, names: Sequence[str]) -> list[str]:
    """Take `names` off STATE_DIR/kind; the file and the directory go when empty."""
    path = q(f"{STATE_DIR}/{kind}")
    drop = " ".join(f"-e {q(n)}" for n in names)
    return [f"if [ -f {path} ]; then grep -vxF {drop} {path} > {path}.new || true; mv -f {path}.new {path}; "
            f"[ -s {path} ] || rm -f {path}; rmdir {STATE_DIR} 2>/dev/null || true; fi"]


@dataclass
class Packages(Op):
    names: tuple[str, ...]
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"packages {' '.join(self.names)}"

    def facts(self) -> list[Fact]:
        return [_pkg_fact(self.names), APT_AGE]

    def plan(self, facts: Facts) -> Plan:
        status = _pkg_status(facts.output(_pkg_fact(self.names)))
        missing = [n for n in self.names if "installed" not in status.get(n, ())]
        if not missing:
            return Plan([], "installed")
        age = int(facts.output(APT_AGE).strip() or 10**9)
        cmds = apt_install_commands(missing, update=age > APT_FRESH_SECONDS) + record_commands("packages", missing)
        why = "install " + ", ".join(missing) + (" (package lists stale: update first)" if age > APT_FRESH_SECONDS else "")
        return Plan(cmds, why)


@dataclass
class PackagesAbsent(Op):
    """Purged, if pitunnel installed them (recorded at install): a package that was there before stays,
    with its config."""

    names: tuple[str, ...]
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"packages purged {' '.join(self.names)}"

    def facts(self) -> list[Fact]:
        return [_pkg_fact(self.names), record_fact("packages")]

    def plan(self, facts: Facts) -> Plan:
        status = _pkg_status(facts.output(_pkg_fact(self.names)))
        present = [n for n in self.names if set(status.get(n, ("not-installed",))) - {"not-installed"}]
        ours = recorded(facts, "packages")
        purge = [n for n in present if n in ours]
        kept = [n for n in present if n not in ours]
        why_kept = f"kept {', '.join(kept)}: installed before pitunnel (no record that pitunnel installed it)" if kept else ""
        if not purge:
            return Plan([], why_kept or "not installed")
        return Plan(["DEBIAN_FRONTEND=noninteractive apt-get purge -y -q --autoremove "
                     + " ".join(q(n) for n in purge) + " >/dev/null", *unrecord_commands("packages", purge)],
                    "; ".join(filter(None, ["purge " + ", ".join(purge), why_kept])))


# ------------------------------------------------------------------ users
def _refuse_foreign(name: str, entry: str, facts: Facts, action: str) -> None:
    """Raise Refused unless the account `entry` describes is one pitunnel made: recorded when it made it,
    or (made by an earlier version) carrying one of pitunnel's comments."""
    fields = [*entry.split(":"), "", "", "", "", "", ""]
    comment, home = fields[4], fields[5]
    if name in recorded(facts, "users") or comment in OWN_COMMENTS:
        return
    raise Refused(f"account {name} exists and pitunnel did not create it (comment {comment!r}, home {home}): "
                  f"not {action}; set tunnel_user to an account of pitunnel's own (default pitunnel)")


@dataclass
class SystemUser(Op):
    """A system account with no password (not even a locked one: sshd treats '!' as locked) and a home.
    Made by pitunnel, and recorded as such; an existing account it did not make is refused, untouched."""

    name: str
    home: str
    shell: str = "/usr/sbin/nologin"
    comment: str = "pitunnel"
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"system user {self.name}"

    def facts(self) -> list[Fact]:
        return [command_fact(f"user:{self.name}", f"getent passwd {q(self.name)} || true"),
                command_fact(f"shadow:{self.name}", f"getent shadow {q(self.name)} | cut -d: -f2"),
                record_fact("users")]

    def plan(self, facts: Facts) -> Plan:
        entry = facts[f"user:{self.name}"][1].strip()
        if not entry:
            return Plan([f"useradd --system --user-group --create-home --home-dir {q(self.home)} "
                         f"--shell {q(self.shell)} --comment {q(self.comment)} {q(self.name)}",
                         f"usermod -p '*' {q(self.name)}", *record_commands("users", [self.name])], "create")
        _refuse_foreign(self.name, entry, facts, "modified")
        fields = entry.split(":")
        cmds, gaps = [], []
        if fields[5] != self.home:
            gaps.append(f"home {fields[5]} -> {self.home}")
            cmds.append(f"usermod --home {q(self.home)} --move-home {q(self.name)}")
        if fields[6] != self.shell:
            gaps.append(f"shell {fields[6]} -> {self.shell}")
            cmds.append(f"usermod --shell {q(self.shell)} {q(self.name)}")
        if facts[f"shadow:{self.name}"][1].strip() != "*":
            gaps.append("password field -> '*'")
            cmds.append(f"usermod -p '*' {q(self.name)}")
        return Plan(cmds, ", ".join(gaps)) if cmds else Plan([], "already as wanted")


@dataclass
class UserAbsent(Op):
    """No such account, if pitunnel made it; an account pitunnel did not make is refused, untouched."""

    name: str
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"user absent {self.name}"

    def facts(self) -> list[Fact]:
        return [command_fact(f"user:{self.name}", f"getent passwd {q(self.name)} || true"), record_fact("users")]

    def plan(self, facts: Facts) -> Plan:
        entry = facts[f"user:{self.name}"][1].strip()
        if not entry:
            return Plan([], "not there")
        _refuse_foreign(self.name, entry, facts, "removed")
        return Plan([f"pkill -KILL -u {q(self.name)} || true", f"userdel --remove {q(self.name)} 2>/dev/null || userdel {q(self.name)}",
                     f"getent group {q(self.name)} >/dev/null && groupdel {q(self.name)} || true",
                     *unrecord_commands("users", [self.name])], "remove with its home")


# ------------------------------------------------------------------ keys
@dataclass
class KeyPair(Op):
    """An ed25519 key made on the host itself: its private half never leaves it."""

    path: str
    owner: str
    comment: str
    title: str = ""
    value: str = ""  # the public half, when it already exists

    def __post_init__(self) -> None:
        self.title = self.title or f"key pair {self.path}"

    def facts(self) -> list[Fact]:
        k = q(self.path)
        return [command_fact(f"key:{self.path}", f"if [ ! -f {k} ]; then echo ABSENT; elif [ -f {k}.pub ]; then "
                             f"echo \"PUB $(cat {k}.pub)\"; else echo NOPUB; fi")]

    def plan(self, facts: Facts) -> Plan:
        found = facts[f"key:{self.path}"][1].strip()
        if found.startswith("PUB ") and len(found.split()) >= 3:
            self.value = found[4:]
            return Plan([], "exists (kept)")
        if found == "NOPUB":
            return Plan([f"runuser -u {q(self.owner)} -- sh -c 'ssh-keygen -y -f {q(self.path)} > {q(self.path)}.pub'"],
                        "public half missing: derive it from the private key (kept)")
        d = q(self.path.rsplit("/", 1)[0])
        return Plan([f"install -d -m 700 -o {q(self.owner)} -g {q(self.owner)} {d}",
                     f"runuser -u {q(self.owner)} -- ssh-keygen -q -t ed25519 -N '' -C {q(self.comment)} -f {q(self.path)}"],
                    "generate on the host")


# ------------------------------------------------------------------ systemd
@dataclass
class Service(Op):
    """A systemd unit enabled and running (or disabled and stopped). `covers` names the handlers that
    restart this unit: starting it from stopped, after the files that notified them, makes them unneeded."""

    unit: str
    enabled: bool = True
    running: bool = True
    title: str = ""
    covers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.title = self.title or f"service {self.unit}"

    def facts(self) -> list[Fact]:
        u = q(self.unit)
        return [command_fact(f"unit:{self.unit}", f"systemctl is-enabled {u} 2>/dev/null; systemctl is-active {u} 2>/dev/null; true")]

    def plan(self, facts: Facts) -> Plan:
        lines = facts[f"unit:{self.unit}"][1].split()
        enabled_now = bool(lines) and lines[0] == "enabled"
        active_now = len(lines) > 1 and lines[1] == "active"
        cmds, gaps = [], []
        u = q(self.unit)
        if self.enabled != enabled_now:
            gaps.append("enable" if self.enabled else "disable")
            # systemctl enable and disable reload systemd's view of the unit files themselves
            cmds.append(f"systemctl {'enable' if self.enabled else 'disable'} --quiet {u}")
        else:
            cmds.append("systemctl daemon-reload")  # a unit file written earlier in this run
        if self.running != active_now:
            gaps.append("start" if self.running else "stop")
            cmds.append(f"systemctl {'start' if self.running else 'stop'} {u}")
        if not gaps:
            return Plan([], f"{'enabled' if enabled_now else 'disabled'}, {'active' if active_now else 'inactive'}")
        # only a unit that was not running at all starts from the new files; one in the middle of
        # (re)starting may still run the old ones, so its restart handler stays
        stopped = len(lines) < 2 or lines[1] in ("inactive", "failed", "unknown")
        started = self.running and stopped
        return Plan(cmds, ", ".join(gaps), covers=self.covers if started else ())


@dataclass
class Handler:
    """Runs once at the end of a step if an op that notifies it changed. `verify` is a laptop-side
    check after it ran (e.g. a fresh login); if it fails, the notifying ops' files are restored."""

    name: str
    commands: list[str]
    verify: Callable[[], bool] | None = None
    verify_hint: str = ""


@dataclass
class Symlink(Op):
    path: str
    target: str
    only_if_exists: bool = True  # skip when the target is gone (e.g. its package was purged)
    notify: tuple[str, ...] = ()
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"link {self.path} -> {self.target}"

    def facts(self) -> list[Fact]:
        return [command_fact(f"link:{self.path}", f"readlink {q(self.path)} || echo ABSENT; "
                             f"[ -e {q(self.target)} ] && echo target-ok || echo target-missing")]

    def plan(self, facts: Facts) -> Plan:
        now, target = (facts[f"link:{self.path}"][1].split() + ["", ""])[:2]
        if now == self.target:
            return Plan([], "already linked")
        if self.only_if_exists and target != "target-ok":
            return Plan([], f"{self.target} is not there")
        backups = [self.path] if self.notify else []
        pre = backup_commands(self.path) if self.notify else []
        return Plan([*pre, f"ln -sfn {q(self.target)} {q(self.path)}"], "link", backups=backups)


@dataclass
class Pruned(Op):
    """In `directory`, no file matching `pattern` but those named in `keep`."""

    directory: str
    pattern: str
    keep: frozenset[str]
    notify: tuple[str, ...] = ()
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"no stray {self.directory}/{self.pattern}"

    def facts(self) -> list[Fact]:
        return [command_fact(f"ls:{self.directory}/{self.pattern}",
                             f"cd {q(self.directory)} 2>/dev/null && for f in {self.pattern}; do [ -e \"$f\" ] && echo \"$f\"; done; true")]

    def plan(self, facts: Facts) -> Plan:
        found = facts[f"ls:{self.directory}/{self.pattern}"][1].split()
        stray = [f for f in found if f not in self.keep]
        if not stray:
            return Plan([], "none")
        paths = [f"{self.directory}/{f}" for f in stray]
        cmds = [c for p in paths for c in backup_commands(p)] if self.notify else []
        return Plan([*cmds, *(f"rm -f {q(p)}" for p in paths)], "remove " + ", ".join(stray),
                    backups=paths if self.notify else [])


@dataclass
class SshdPasswordsCheck(Op):
    """Changes nothing: warns when the effective sshd config lets passwords in (as root would log in)."""

    title: str = "sshd password logins for root (effective config, read only)"

    def facts(self) -> list[Fact]:
        return [command_fact("sshd-passwords", "sshd -T -C user=root,host=pitunnel-check,addr=192.0.2.1 2>/dev/null "
                             "| grep -iE '^(passwordauthentication|kbdinteractiveauthentication|permitrootlogin) '")]

    def plan(self, facts: Facts) -> Plan:
        settings = dict(line.split(None, 1) for line in facts["sshd-passwords"][1].splitlines() if " " in line)
        if settings.get("passwordauthentication") == "yes":
            return Plan([], "WARNING: sshd accepts passwords (PasswordAuthentication yes); left as it is, "
                        "consider key-only login")
        return Plan([], "passwords refused")


@dataclass
class Observe(Op):
    """Changes nothing: reads a fact during the step's single gather and keeps its output in `.value`."""

    fact: Fact
    describe: Callable[[str], str]
    title: str = ""
    value: str = ""

    def facts(self) -> list[Fact]:
        return [self.fact]

    def plan(self, facts: Facts) -> Plan:
        self.value = facts.output(self.fact)
        return Plan([], self.describe(self.value))
