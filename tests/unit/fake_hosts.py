"""Scripted hosts for the roles' unit tests: what a host answers to the engine's fact reads is given as data,
every operation sent is recorded (and succeeds, unless the test says which one fails), so a test can state
what a step plans and does for a given host state without a host."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

from pitunnel.facts import FileState
from pitunnel.inventory import Inventory, load_inventory
from pitunnel.play import Options, Play
from pitunnel.remote import Credentials, Result
from pitunnel.report import Reporter

FACT_RE = re.compile(r"printf '@@FACT (\d+)\\n'; \( (.*?)\n\) 2>&1", re.S)
OP_RE = re.compile(r"printf '@@OP (\d+)\\n'\n\( set -e\n(.*?)\n\) 2>&1", re.S)

# the VPS's tunnel account as getent shows it once pitunnel made it
ACCOUNT = "pitunnel:x:999:999:pitunnel reverse tunnels:/var/lib/pitunnel:/usr/sbin/nologin"



class FakeHost:
    """Answers each fact snippet with the output of the first `answers` entry whose key is in it (none: empty
    output), runs every op as done (except one whose commands contain `fail_on`: exit 1), answers other
    scripts by `commands` (a substring -> stdout), and keeps every script and every fresh-login asked for."""

    def __init__(self, name: str, answers: Sequence[tuple[str, str]] = (), commands: Sequence[tuple[str, str]] = (),
                 *, fail_on: str | None = None, fresh_login: bool = True, journal: list[str] | None = None) -> None:
        self.name, self.answers, self.commands, self.fail_on = name, list(answers), list(commands), fail_on
        self.fresh_login, self.round_trips, self.closed = fresh_login, 0, False
        self.scripts: list[str] = []
        self.logins: list[bool] = []  # use_password of each fresh login asked for
        self.windows: list[float] = []  # and how long each may keep trying
        self.journal = journal if journal is not None else []  # "name read|apply|run", shared by hosts to see the order
        self.timeouts: list[float] = []  # the timeouts scripts were given
        self.ops: list[str] = []  # the commands of every op applied, and every other script that is no fact read
        self.through_tunnel = False  # reached directly, not through its own ssh tunnel (Remote.through_tunnel)
        self.credentials = Credentials()  # no login password: the laptop's key is the only known way in
        self.echo: Callable[[str], None] | None = None  # -v: every line of output, as Remote.run streams it

    def describe(self) -> list[str]:
        return [f"a scripted host, {self.name}"]

    def close(self) -> None:
        self.closed = True

    def connection(self) -> SimpleNamespace:
        """Opened already (a test that needs channels sets its own: connection_of)."""
        return SimpleNamespace(client=SimpleNamespace(get_transport=lambda: None))

    def can_log_in_fresh(self, *, use_password: bool = True, within: float = 10) -> bool:
        self.logins.append(use_password)
        self.windows.append(within)
        return self.fresh_login

    def answer(self, snippet: str) -> str:
        return next((v for k, v in self.answers if k in snippet), "")

    def run(self, script: str, *, timeout: float | None = None,
            mask: Callable[[str], str | None] | None = None, **_: object) -> Result:
        result = self._run(script, timeout)
        echo = self.echo
        for line in result.stdout.splitlines() if echo is not None else ():  # what Remote.run's _drain does
            shown = line if mask is None else mask(line)
            if echo is not None and shown is not None:
                echo(shown)
        return result

    def _run(self, script: str, timeout: float | None) -> Result:
        self.round_trips += 1
        if timeout is not None:
            self.timeouts.append(timeout)
        self.scripts.append(script)
        out = []
        facts = FACT_RE.findall(script)
        for index, snippet in facts:
            out.append(f"@@FACT {index}\n{self.answer(snippet)}\n@@RC {index} 0\n")
        ops = OP_RE.findall(script)
        for index, body in ops:
            failed = self.fail_on is not None and self.fail_on in body
            self.ops.append(body)
            out.append(f"@@OP {index}\n{'it broke' if failed else ''}\n@@OPRC {index} {1 if failed else 0}\n")
            if failed:
                break
        self.journal.append(f"{self.name} {'read' if facts else 'apply' if ops else 'run'}")
        if not facts and not ops:  # a handler's commands, or a read of its own
            self.ops.append(script)
            out.append(next((v for k, v in self.commands if k in script), ""))
        return Result(0, "".join(out), "")

    def applied(self, text: str) -> bool:
        """Did any op applied contain `text`?"""
        return any(text in body for body in self.ops)


def load(tmp_path: Path, text: str, files: dict[str, str] | None = None) -> Inventory:
    for name, content in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    file = tmp_path / "hosts.yml"
    file.write_text(textwrap.dedent(text).lstrip())
    return load_inventory(file)


def play_on(inv: Inventory, hosts: dict[str, FakeHost], *, check: bool = False,
            limit: frozenset[str] = frozenset()) -> Play:
    return Play(inv, Options(check=check, limit=limit), Reporter(colour=False), hosts)  # type: ignore[arg-type]


def lines(capsys: object) -> list[str]:
    """What the reporter printed, one line each, runs of spaces squeezed."""
    return [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]  # type: ignore[attr-defined]


def connection_of(transport: object) -> Callable[[], SimpleNamespace]:
    """A Remote.connection() whose client hands out `transport` (verify opens its channels on it)."""
    return lambda: SimpleNamespace(client=SimpleNamespace(get_transport=lambda: transport))


def converged(ops: Sequence[object], *, users: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Answers that show a host already as `ops` want it: each file with its wanted content, owner and mode,
    each directory, account, unit and package as wanted, nothing stray (put them before other answers)."""
    import base64

    from pitunnel.ops import Directory, File, KeyPair, Packages, Pruned, Service, SystemUser, q
    found: list[tuple[str, str]] = []
    for op in ops:
        if isinstance(op, File):
            blob = base64.b64encode(op.wanted(FileState(False)).encode()).decode()
            found.append((f"base64 -w0 {q(op.path)}", f"{op.owner}:{op.group}:{op.mode:o}\n{blob}"))
        elif isinstance(op, Directory):
            found.append((f"stat -c '%F:%U:%G:%a' {q(op.path)}", f"directory:{op.owner}:{op.group}:{op.mode:o}"))
        elif isinstance(op, SystemUser):
            found += [(f"getent passwd {q(op.name)} || true", f"{op.name}:x:999:999:{op.comment}:{op.home}:{op.shell}"),
                      (f"getent shadow {q(op.name)}", "*")]
        elif isinstance(op, Service):
            found.append((f"systemctl is-enabled {q(op.unit)}", "enabled\nactive" if op.enabled else "disabled\ninactive"))
        elif isinstance(op, Packages):
            found.append(("dpkg-query", "\n".join(f"{n} installed" for n in op.names)))
        elif isinstance(op, Pruned):
            found.append((f"cd {q(op.directory)} 2>/dev/null && for f in {op.pattern};", "\n".join(sorted(op.keep))))
        elif isinstance(op, KeyPair):
            found.append((f"if [ ! -f {q(op.path)} ]", "PUB ssh-ed25519 AAAAkept"))
    return [*found, ("/users", "\n".join(users))]


def in_order(seen: list[str], expected: list[str]) -> None:
    """Each expected line was printed, in this order (lines of steps added later may come between)."""
    at = 0
    for line in expected:
        assert line in seen[at:], f"missing, or out of order: {line!r}\nprinted:\n" + "\n".join(seen)
        at = seen.index(line, at) + 1


def mode_of(host: FakeHost, path: str) -> str:
    """How an op on `host` wrote the file `path`: "owner:group mode"."""
    parent = path.rsplit("/", 1)[0]
    (body,) = [b for b in host.ops if f"pitunnel_enter {parent} {path}\n" in b]
    found = re.search(r"chown -h (\S+) new && chmod (\d+) new", body)
    assert found is not None
    return f"{found.group(1)} {found.group(2)}"


def sessions_holding(listeners: str, pid: int = 7) -> str:
    """`ss -Htln` lines as `status` reads them (`ss -Htlnp`, the VPS's clock, the tunnel account's processes):
    each listener held by one session of the tunnel account, process `pid`."""
    held = [f'{line} users:(("sshd",pid={pid},fd=3))' for line in listeners.splitlines() if line.strip()]
    return "\n".join(["NOW 1796554800", *held, f"P {pid} 60"]) + "\n"
