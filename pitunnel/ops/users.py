"""Account operations: a system account pitunnel made, or none, and a key pair made on the host for one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..facts import Fact, Facts
from .base import Op, Plan, Refused
from .records import OWN_COMMENTS, record_commands, record_fact, recorded, unrecord_commands
from .shell import _split, directory_commands, q


@dataclass(frozen=True)
class Account:
    """An account as `getent passwd` shows it (a field it does not show is "")."""

    comment: str
    home: str
    shell: str


def account(output: str) -> Account | None:
    """The account of a `getent passwd` line; None: no such account."""
    entry = output.strip()
    if not entry:
        return None
    _name, _password, _uid, _gid, comment, home, shell, *_ = [*entry.split(":"), "", "", "", "", "", "", ""]
    return Account(comment, home, shell)


def account_fact(name: str) -> Fact[Account | None]:
    return Fact(f"user:{name}", f"getent passwd {q(name)} || true", account)


def password_fact(name: str) -> Fact[str]:
    """The account's password field in the shadow file ("" without one, or without the account)."""
    return Fact(f"shadow:{name}", f"getent shadow {q(name)} | cut -d: -f2", str.strip)


def _refuse_foreign(name: str, found: Account, facts: Facts, action: str) -> None:
    """Raise Refused unless the account `found` is one pitunnel made: recorded when it made it, or (made by an
    earlier version) carrying one of pitunnel's comments."""
    if name in recorded(facts, "users") or found.comment in OWN_COMMENTS:
        return
    raise Refused(f"account {name} exists and pitunnel did not create it (comment {found.comment!r}, home {found.home}): "
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
        return [account_fact(self.name), password_fact(self.name), record_fact("users")]

    def plan(self, facts: Facts) -> Plan:
        found = facts.value(account_fact(self.name))
        if found is None:
            return Plan([f"useradd --system --user-group --create-home --home-dir {q(self.home)} "
                         f"--shell {q(self.shell)} --comment {q(self.comment)} {q(self.name)}",
                         f"usermod -p '*' {q(self.name)}", *record_commands("users", [self.name])], "create")
        _refuse_foreign(self.name, found, facts, "modified")
        cmds, gaps = [], []
        if found.home != self.home:
            gaps.append(f"home {found.home} -> {self.home}")
            cmds.append(f"usermod --home {q(self.home)} --move-home {q(self.name)}")
        if found.shell != self.shell:
            gaps.append(f"shell {found.shell} -> {self.shell}")
            cmds.append(f"usermod --shell {q(self.shell)} {q(self.name)}")
        if facts.value(password_fact(self.name)) != "*":
            gaps.append("password field -> '*'")
            cmds.append(f"usermod -p '*' {q(self.name)}")
        return Plan(cmds, ", ".join(gaps)) if cmds else Plan([], "already as wanted")


def _end_processes(name: str) -> str:
    """End every process of the account (by effective and by real UID) and wait, 5 s at most, until none is left:
    userdel refuses while one still runs or is not yet reaped (a session killed a moment ago, or the account's
    systemd --user, which logind keeps a few seconds after its last session)."""
    user = q(name)
    kill = f"pkill -KILL -u {user} || true; pkill -KILL -U {user} || true"  # under set -e: none left is no failure
    return (f"{kill}; i=0; while {{ pgrep -u {user} || pgrep -U {user}; }} >/dev/null && [ $i -lt 50 ]; do "
            f"sleep 0.1; i=$((i + 1)); {kill}; done")


@dataclass
class UserAbsent(Op):
    """No such account, if pitunnel made it; an account pitunnel did not make is refused, untouched."""

    name: str
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"user absent {self.name}"

    def facts(self) -> list[Fact[Any]]:
        return [account_fact(self.name), record_fact("users")]

    def plan(self, facts: Facts) -> Plan:
        found = facts.value(account_fact(self.name))
        if found is None:
            return Plan([], "not there")
        _refuse_foreign(self.name, found, facts, "removed")
        return Plan([_end_processes(self.name), f"userdel --remove {q(self.name)} 2>/dev/null || userdel {q(self.name)}",
                     f"getent group {q(self.name)} >/dev/null && groupdel {q(self.name)} || true",
                     *unrecord_commands("users", [self.name])], "remove with its home")


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
