"""Operations: each reads facts, compares them with what is wanted, and plans only the commands
that close the gap, or says in one line why nothing is needed (pyinfra's model).

Planning is pure: it never touches a host and sets nothing on the op; what a step wants to know of the
host it reads from the facts the runner returns (typed, by each fact's own parse step).
"""

from __future__ import annotations

import base64
import difflib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

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
    sessions_ended: int = 0  # live sessions this change ends (roles/vps/sessions.py): counted in the recap

    @property
    def changes(self) -> bool:
        return bool(self.commands)


class Op:
    title: str = ""
    notify: tuple[str, ...] = ()

    def facts(self) -> list[Fact[Any]]:
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


# ------------------------------------------------------------------ writing where other accounts can write
# Root must never follow a symbolic link that another account could have planted: a link in a directory
# that someone else can write (the tunnel account's ~/.ssh, a login user's home) could send root's write,
# chown or chmod to /etc/shadow or /root/.ssh. So a write walks to its directory one component at a time
# (`cd -P`, checking that the directory entered is the one looked at); it follows a link only where root
# alone can write, and refuses it elsewhere; then it writes in a private directory of its own (made by
# mktemp -d, where nobody else can put anything) and renames the file into place, which replaces the
# name itself and never follows a link.
ENTER_FUNCTION = r"""pitunnel_enter() {
  cd / || exit 1
  _ifs=$IFS; IFS=/; set -f
  for c in $1; do
    IFS=$_ifs
    [ -n "$c" ] || continue
    if [ -L "$c" ]; then
      if [ "$(stat -c %u .)" != 0 ] || [ $(( 0$(stat -c %a .) & 022 )) -ne 0 ]; then
        echo "refusing to write $2: $(pwd -P)/$c is a symbolic link in a directory that $(stat -c %U .) owns (mode $(stat -c %a .)), where a planted link could send root's write anywhere: remove the link and run again" >&2
        exit 1
      fi
      cd -P "$c" || exit 1
    else
      [ -e "$c" ] || mkdir "$c" || exit 1
      [ -d "$c" ] || { echo "refusing to write $2: $(pwd -P)/$c is not a directory" >&2; exit 1; }
      i=$(stat -c %d:%i "$c") || exit 1
      cd -P "$c" || exit 1
      [ "$(stat -c %d:%i .)" = "$i" ] || { echo "refusing to write $2: $(pwd -P) changed while it was entered" >&2; exit 1; }
    fi
  done
  IFS=$_ifs; set +f
}"""


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rstrip("/").rpartition("/")
    return parent or "/", name


def write_file_commands(path: str, blob: str, owner: str, group: str, mode: int) -> list[str]:
    """Put base64 `blob` at `path` with this owner and mode, never following a link another account
    could have planted: not the file itself (refused), nor any directory on the way (see ENTER_FUNCTION)."""
    parent, name = _split(path)
    return [
        f"( {ENTER_FUNCTION}",
        f"pitunnel_enter {q(parent)} {q(path)}",
        f"n={q(name)}",
        f"if [ -L \"$n\" ]; then echo \"refusing to write {_dq(path)}: it is a symbolic link (to $(readlink \"$n\")), "
        "and pitunnel replaces only regular files: remove the link and run again\" >&2; exit 1; fi",
        f"if [ -d \"$n\" ]; then echo \"refusing to write {_dq(path)}: it is a directory\" >&2; exit 1; fi",
        "t=$(mktemp -d \".$n.pitunnel-XXXXXX\")",
        "i=$(stat -c %d:%i \"$t\"); cd -P \"$t\"; [ \"$(stat -c %d:%i .)\" = \"$i\" ] || exit 1",
        f"printf %s {blob} | base64 -d > new",
        f"chown -h {q(owner)}:{q(group)} new && chmod {mode:o} new",
        "mv -f -T new \"../$n\"",
        "cd -P .. && rmdir \"$t\" 2>/dev/null || true )",
    ]


def directory_commands(path: str, owner: str, group: str, mode: int) -> list[str]:
    """A directory with this owner and mode, made and changed without following a planted link."""
    return [f"( {ENTER_FUNCTION}", f"pitunnel_enter {q(path)} {q(path)}",
            f"chown {q(owner)}:{q(group)} . && chmod {mode:o} . )"]


def _dq(text: str) -> str:
    """`text` for inside a double-quoted shell string."""
    return "".join("\\" + c if c in '"$`\\' else c for c in text)


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
    create: bool = True  # False: a missing file stays missing (an edit of lines in a file that may not exist)

    def __post_init__(self) -> None:
        self.title = self.title or f"file {self.path}"

    def facts(self) -> list[Fact[Any]]:
        return [file_fact(self.path)]

    def wanted(self, state: FileState) -> str:
        return self.content(state) if callable(self.content) else self.content

    def plan(self, facts: Facts) -> Plan:
        state = facts.file(self.path)
        if state.symlink is not None:
            why = (f"refusing to write {self.path}: it is a symbolic link (to {state.symlink}), and pitunnel "
                   "replaces only regular files: remove the link and run again")
            return Plan([f"echo {q(why)} >&2", "exit 1"], f"a symbolic link to {state.symlink}: refused")
        if not state.exists and not self.create:
            return Plan([], "absent: nothing to change")
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
        blob = base64.b64encode(new).decode()
        commands = []
        backups = []
        if self.validate or self.notify:
            commands += backup_commands(self.path)
            backups.append(self.path)
        commands += write_file_commands(self.path, blob, self.owner, self.group, self.mode)
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

    def facts(self) -> list[Fact[Any]]:
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

    def facts(self) -> list[Fact[Any]]:
        return [command_fact(f"dir:{self.path}", f"stat -c '%F:%U:%G:%a' {q(self.path)} 2>/dev/null || echo ABSENT")]

    def plan(self, facts: Facts) -> Plan:
        now = facts[f"dir:{self.path}"][1].strip()
        want = f"directory:{self.owner}:{self.group}:{self.mode:o}"
        if now == want:
            return Plan([], "already as wanted")
        return Plan(directory_commands(self.path, self.owner, self.group, self.mode),
                    "create" if now == "ABSENT" else f"{now} -> {want}")


# ------------------------------------------------------------------ packages
def _pkg_fact(names: Sequence[str]) -> Fact[str]:
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


def record_fact(kind: str) -> Fact[str]:
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

    def facts(self) -> list[Fact[Any]]:
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

    def facts(self) -> list[Fact[Any]]:
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

    def facts(self) -> list[Fact[Any]]:
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


LATER_SCRIPT = "/run/pitunnel-later.sh"  # what Later ops leave for the host to run once the run has left


@dataclass
class Later(Op):
    """`op`, decided now (its facts read and its refusals raised on this run), carried out by the host itself
    once this run has left it: for what would cut the connection the run rides (a Pi reached through its own
    tunnel). Its commands go to LATER_SCRIPT; `arm_later` starts them, last of all. Nothing proves them."""

    op: Op
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or self.op.title

    def facts(self) -> list[Fact[Any]]:
        return self.op.facts()

    def plan(self, facts: Facts) -> Plan:
        inner = self.op.plan(facts)
        if not inner.changes:
            return inner
        script = "\n".join(inner.commands) + "\n"
        return Plan([f"printf '%s' {q(script)} >> {LATER_SCRIPT}"],
                    f"{inner.reason}, once this run has left (its connection rides it)")


def arm_later(seconds: int, then: str = "") -> str:
    """The host runs what Later ops left, `seconds` from now, on its own (systemd-run), then `then`."""
    armed = LATER_SCRIPT + ".armed"
    script = f"sh {armed}; rm -f {armed}; systemctl daemon-reload" + (f"; {then}" if then else "")
    return (f"if [ -s {LATER_SCRIPT} ]; then mv -f {LATER_SCRIPT} {armed}; "
            f"systemd-run --quiet --collect --on-active={seconds} --timer-property=AccuracySec=100ms "
            f"/bin/sh -c {q(script)}; fi\n")


@dataclass
class UserAbsent(Op):
    """No such account, if pitunnel made it; an account pitunnel did not make is refused, untouched."""

    name: str
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"user absent {self.name}"

    def facts(self) -> list[Fact[Any]]:
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
@dataclass(frozen=True)
class KeyState:
    """What a host has of a key pair: the private half or not, and the .pub file's text if there is one."""

    private: bool
    public: str | None

    @property
    def kept(self) -> bool:
        """A private half with a public half that looks like a key line: left as it is."""
        return self.public is not None and len(self.public.split()) >= 2


def key_state(output: str) -> KeyState:
    found = output.strip()
    if found == "PUB" or found.startswith("PUB "):
        return KeyState(True, found[4:])
    return KeyState(found == "NOPUB", None)


@dataclass
class KeyPair(Op):
    """An ed25519 key made on the host itself: its private half never leaves it. What the host has of
    it is `facts.value(op.fact)` (a KeyState)."""

    path: str
    owner: str
    comment: str
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"key pair {self.path}"

    @property
    def fact(self) -> Fact[KeyState]:
        k = q(self.path)
        return Fact(f"key:{self.path}", f"if [ ! -f {k} ]; then echo ABSENT; elif [ -f {k}.pub ]; then "
                    f"echo \"PUB $(cat {k}.pub)\"; else echo NOPUB; fi", key_state)

    def facts(self) -> list[Fact[Any]]:
        return [self.fact]

    def plan(self, facts: Facts) -> Plan:
        found = facts.value(self.fact)
        if found.kept:
            return Plan([], "exists (kept)")
        if found.private and found.public is None:
            return Plan([f"runuser -u {q(self.owner)} -- sh -c 'ssh-keygen -y -f {q(self.path)} > {q(self.path)}.pub'"],
                        "public half missing: derive it from the private key (kept)")
        return Plan([*directory_commands(_split(self.path)[0], self.owner, self.owner, 0o700),
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

    def facts(self) -> list[Fact[Any]]:
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
    check after it ran (e.g. a fresh login); if it fails, the notifying ops' files are restored.
    A handler with a `verify` guards its changes with a commit-confirm on the host (see arm_commands)."""

    name: str
    commands: list[str]
    verify: Callable[[], bool] | None = None
    verify_hint: str = ""
    confirm_seconds: float | None = None  # the host rolls an unproven change back after this long (None: CONFIRM_SECONDS)

    @property
    def guarded(self) -> bool:
        return self.verify is not None


# ------------------------------------------------------------------ commit-confirm for guarded handlers
# Before a run writes a file whose handler must be proven by a fresh login (sshd's), it records the change
# on the host as pending (a rollback script that names the handler and the files, whose backups it keeps)
# and arms a transient systemd timer that runs that script unless a run proves the change first: if the
# laptop's connection dies between the write and the proof, the host puts the old files back on its own.
# The next run reads the records with its other facts and proves or rolls back each one before anything else.
CONFIRM_SECONDS: float = 120
TIMER_COMMAND = ("systemd-run --quiet --unit={unit} --on-active={seconds} --timer-property=AccuracySec=1s "
                 "/bin/sh {record}")
DISARM_COMMAND = ("systemctl stop {unit}.timer {unit}.service 2>/dev/null || true; "
                  "systemctl reset-failed {unit}.timer {unit}.service 2>/dev/null || true")
PENDING_MARK = "# handler: "
GONE = "@@PITUNNEL-PENDING-GONE"  # the record vanished: the host's timer rolled the change back already


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def pending_dir() -> str:
    return f"{BACKUP_DIR}/pending"


def pending_record(handler: str) -> str:
    return f"{pending_dir()}/{_slug(handler)}"


def confirm_unit(handler: str) -> str:
    return f"pitunnel-confirm-{_slug(handler)}"


def confirm_seconds(handler: Handler) -> float:
    return handler.confirm_seconds if handler.confirm_seconds is not None else CONFIRM_SECONDS


def lock_commands() -> list[str]:
    """Hold the pending records' lock for the rest of the script: the run and the host's timer take turns."""
    return [f"mkdir -p {q(pending_dir())}", f"exec 9>>{q(pending_dir())}/.lock", "flock 9"]


def _timer(handler: Handler) -> list[str]:
    unit, record = confirm_unit(handler.name), pending_record(handler.name)
    return [DISARM_COMMAND.format(unit=unit),
            TIMER_COMMAND.format(unit=unit, seconds=confirm_seconds(handler), record=q(record))]


def rollback_script(handler: Handler, paths: Sequence[str]) -> str:
    """The pending record: run by the timer (or by a run whose proof failed), it restores the files,
    runs the handler again and forgets the change; it does nothing once the change is proven."""
    record, unit = q(pending_record(handler.name)), confirm_unit(handler.name)
    lines = ["#!/bin/sh",
             f"# pitunnel: a change that handler \"{handler.name}\" has not proven yet (by a fresh login after it).",
             f"# Unless a run proves it first, {unit}.timer runs this script: the old files come back.",
             f"{PENDING_MARK}{handler.name}",
             *(f"# path: {p}" for p in paths),
             *lock_commands(), f"[ -e {record} ] || exit 0",
             *(c for p in paths for c in restore_commands(p)),
             "if ( set -e", *handler.commands, "); then",
             # the timer only: this script may be its service, which must not stop itself
             f"  rm -f {record}", f"  systemctl stop {unit}.timer 2>/dev/null || true",
             f"  echo \"pitunnel: unproven change rolled back, handler {handler.name} ran again\"", "  exit 0", "fi",
             f"echo \"pitunnel: rolling back: handler {handler.name} failed; the record stays for the next run\" >&2",
             "exit 1"]
    return "\n".join(lines) + "\n"


def arm_commands(handler: Handler, paths: Sequence[str]) -> list[str]:
    """Before the first write that notifies `handler`: the pending record, and the timer that rolls it back."""
    record = q(pending_record(handler.name))
    blob = base64.b64encode(rollback_script(handler, paths).encode()).decode()
    return [f"mkdir -p {q(pending_dir())} && chmod 700 {q(BACKUP_DIR)} {q(pending_dir())}", *lock_commands(),
            # backups left by an older run: the timer must restore only what this run backs up
            *(f"rm -rf {q(backup_path(p))} {q(backup_path(p))}.absent" for p in paths),
            f"printf %s {blob} | base64 -d > {record}.new && mv -f {record}.new {record}",
            *_timer(handler)]


def prove_commands(handler: Handler) -> list[str]:
    """The handler itself, if its change is still pending, with the timer re-armed for the check after it."""
    record = q(pending_record(handler.name))
    return [*lock_commands(), f"[ -e {record} ] || {{ echo {GONE}; exit 3; }}", *_timer(handler), "set -e", *handler.commands]


def confirm_commands(handler: Handler, paths: Sequence[str]) -> list[str]:
    """The change is proven: disarm the timer, drop the backups and the record (unless the timer won)."""
    record = q(pending_record(handler.name))
    return [*lock_commands(), f"[ -e {record} ] || {{ echo {GONE}; exit 3; }}", *disarm_commands(handler, paths)]


def disarm_commands(handler: Handler, paths: Sequence[str]) -> list[str]:
    return [DISARM_COMMAND.format(unit=confirm_unit(handler.name)),
            *(c for p in paths for c in drop_backup_commands(p)), f"rm -f {q(pending_record(handler.name))}"]


def rollback_commands(handler: Handler) -> list[str]:
    return [f"sh {q(pending_record(handler.name))}"]


def pending_fact() -> Fact[str]:
    """The changes earlier runs left unproven on this host (read with the other facts: no extra round trip)."""
    return command_fact("pending-changes", f"cd {q(pending_dir())} 2>/dev/null && for f in *; do "
                        "[ -f \"$f\" ] && grep -h '^# \\(handler\\|path\\): ' \"$f\"; done; true")


def pending_changes(facts: Facts) -> dict[str, list[str]]:
    """handler name -> the paths of its change that an earlier run left unproven on the host."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in facts.get(pending_fact().key, (0, ""))[1].splitlines():
        if line.startswith(PENDING_MARK):
            current = found.setdefault(line[len(PENDING_MARK):], [])
        elif line.startswith("# path: ") and current is not None:
            current.append(line[len("# path: "):])
    return found


@dataclass
class Symlink(Op):
    path: str
    target: str
    only_if_exists: bool = True  # skip when the target is gone (e.g. its package was purged)
    notify: tuple[str, ...] = ()
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"link {self.path} -> {self.target}"

    def facts(self) -> list[Fact[Any]]:
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

    def facts(self) -> list[Fact[Any]]:
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

    def facts(self) -> list[Fact[Any]]:
        return [command_fact("sshd-passwords", "sshd -T -C user=root,host=pitunnel-check,addr=192.0.2.1 2>/dev/null "
                             "| grep -iE '^(passwordauthentication|kbdinteractiveauthentication|permitrootlogin) '")]

    def plan(self, facts: Facts) -> Plan:
        settings = dict(line.split(None, 1) for line in facts["sshd-passwords"][1].splitlines() if " " in line)
        if settings.get("passwordauthentication") == "yes":
            return Plan([], "WARNING: sshd accepts passwords (PasswordAuthentication yes); left as it is, "
                        "consider key-only login")
        return Plan([], "passwords refused")


T = TypeVar("T")


@dataclass
class Observe(Op, Generic[T]):
    """Changes nothing: reads a fact during the step's single gather and describes its value in one line;
    the step reads the value itself from the facts converge returns."""

    fact: Fact[T]
    describe: Callable[[T], str]
    title: str = ""

    def facts(self) -> list[Fact[Any]]:
        return [self.fact]

    def plan(self, facts: Facts) -> Plan:
        return Plan([], self.describe(facts.value(self.fact)))
