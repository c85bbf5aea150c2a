"""What every provisioning task shares: its flags (declared once, in Flags), finding and loading the
inventory, Ctrl-C, and turning problems into exit codes (pitunnel.failures; docs/cli.md)."""

from __future__ import annotations

import functools
import inspect
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, TypeVar

from invoke import Exit, Task

from . import failures
from .dial import abandon_logins
from .inventory import Inventory, InventoryError, load_inventory, ports_file
from .inventory.checks import plain_http_names
from .play import BadLimit, Options, Play
from .runner import STOP
from .sshconf import BadSshConfig

ROOT = Path(__file__).resolve().parent.parent
CHECKOUT = (ROOT / "tasks.py").exists() and (ROOT / "lab").is_dir()  # run from a source checkout, not a wheel
DEFAULT_INVENTORY = Path("inventory") / "hosts.yml"  # relative to the current directory
LAB_INVENTORY = ROOT / "inventory" / "lab.yml"
ENV_INVENTORY = "PITUNNEL_INVENTORY"

DEFAULT_FORKS = 32  # hosts worked on at once (pitunnel.play.Options.forks)
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}=?")  # as ssh-keygen -l prints a host key's

T = TypeVar("T")


def flag(default: T, short: str, help: str) -> T:
    """One shared flag: its default, its short flag (-x) and its help line in `invoke --help TASK`."""
    return field(default=default, metadata={"short": short, "help": help})


@dataclass(frozen=True)
class Flags:
    """The flags every provisioning task shares; each field is one flag (--name, with `_` as `-`)."""

    inventory: str | None = flag(None, "i", f"inventory file (default ${ENV_INVENTORY}, else ./inventory/hosts.yml); "
                                          "`pitunnel init` writes a first one")
    check: bool = flag(False, "c", "read every host for real but change nothing; report what would change")
    diff: bool = flag(False, "d", "show a unified diff of every file that changes or would change (secrets masked)")
    limit: str = flag("", "l", "only these hosts: NAME[,NAME...]; a name may be a glob ('pi*') or `vps` / `pis` "
                               "(every host of that role); selecting no host this task works on is an error")
    accept_new_host_keys: bool = flag(False, "a", "record host keys seen for the first time in the known_hosts file "
                                                  "(check their fingerprints first); a changed key is refused always")
    accept_changed_host_key: str = flag("", "k", "SHA256:... of a host's NEW key, read on its console after a reinstall: "
                                                 "that key (and no other) replaces the host's old ones in known_hosts")
    prompt_for_login_password: bool = flag(False, "p", "ask for the SSH login password (first contact with a fresh Pi)")
    prompt_for_sudo_password: bool = flag(False, "r", "ask for the sudo password (never logged, never on a command "
                                                      "line)")
    verbose: int = flag(0, "v", "print more: where each connection setting came from, remote output; -vv also the "
                                "SSH handshake and each login attempt (secrets masked)")
    forks: int = flag(DEFAULT_FORKS, "f", f"how many hosts are worked on at once (default {DEFAULT_FORKS})")
    json: bool = flag(False, "j", "print one JSON document on stdout for scripts (the run's lines go to stderr)")

    def options(self) -> Options:
        """How the engine takes them."""
        return Options(check=self.check, diff=self.diff,
                       limit=frozenset(n.strip() for n in self.limit.split(",") if n.strip()),
                       accept_new_host_keys=self.accept_new_host_keys,
                       accept_changed_host_key=self.accept_changed_host_key.strip(),
                       prompt_login_password=self.prompt_for_login_password,
                       prompt_sudo_password=self.prompt_for_sudo_password, verbose=self.verbose >= 1,
                       ssh_debug=self.verbose >= 2, forks=self.forks)

    def problem(self) -> str | None:
        """What is wrong with the flags themselves, in one line with the fix, before the inventory is read
        (None: nothing)."""
        if self.inventory is not None and not self.inventory.strip():
            return "-i/--inventory is empty. Fix: give the inventory file (-i hosts.yml), or leave -i out"
        key = self.accept_changed_host_key.strip()
        if key and not FINGERPRINT.fullmatch(key):
            return (f"-k/--accept-changed-host-key {key!r} is not a SHA256 fingerprint. Fix: give the host's new key's "
                    "fingerprint as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it on its console "
                    "(SHA256: and 43 characters)")
        if self.forks < 1:
            return f"--forks {self.forks}: at least 1 host at a time. Fix: --forks N with N >= 1 (default {DEFAULT_FORKS})"
        return None

    def vet(self) -> None:
        """Raise Exit (3) if the flags themselves are wrong: before the inventory is read or any host touched."""
        problem = self.problem()
        if problem:
            raise Exit(problem, code=failures.USAGE)


FLAGS = {f.name: f for f in fields(Flags)}
COMMON = tuple(n for n in FLAGS if n != "json")  # every provisioning task's; --json only where a document is made
READ_ONLY = ("inventory", "limit", "accept_new_host_keys", "prompt_for_login_password", "prompt_for_sudo_password",
             "verbose", "forks")  # tasks that never change a host: no --check, no --diff


class FlagsTask(Task):
    """An Invoke task whose shared flags keep the short flags Flags gives them, whatever else it takes;
    its own flags get theirs as Invoke picks them, from the letters left, or none if `shorts` maps them to ""."""

    def __init__(self, body: Callable[..., Any], *, shorts: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        self.shorts = dict(shorts)

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names | set(self.shorts.values()))
        if name in self.shorts:
            opts["names"] = [opts["names"][0], *filter(None, [self.shorts[name]])]
        return opts


def provisioning_task(*, flags: Iterable[str] = COMMON, help: Mapping[str, str] | None = None,
                      shorts: Mapping[str, str] | None = None,
                      positional: Iterable[str] = ()) -> Callable[[Callable[..., None]], FlagsTask]:
    """A task taking the shared `flags` (all by default) as one Flags argument named `flags`, after the
    Context; Invoke sees each of them as a flag of its own. `help` is for the task's own arguments;
    `shorts` overrides a shared flag's short flag for this task, or sets an own argument's ("": none);
    `positional`: own arguments given without a flag (`revoke PI`).
    Invoke's own `--dry` runs the task as --check (a task without --check never changes a host anyway)."""
    names = list(flags)

    def make(body: Callable[..., None]) -> FlagsTask:
        params = list(inspect.signature(body).parameters.values())
        assert [p.name for p in params[:2]] == ["c", "flags"], f"{body.__name__}(c, flags, ...)"
        shared = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=FLAGS[n].default,
                                    annotation=FLAGS[n].type) for n in names]
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[2:]]

        @functools.wraps(body)
        def run(c: Any, **kwargs: Any) -> None:
            given = {n: kwargs.pop(n) for n in names if n in kwargs}
            if dry_run(c):
                print("--dry: " + ("run as --check: every host is read, none is changed" if "check" in names else
                                   f"{body.__name__.replace('_', '-')} never changes a host; running it"),
                      file=sys.stderr)
                given.update({"check": True} if "check" in names else {})
            body(c, Flags(**given), **kwargs)

        setattr(run, "__signature__", inspect.Signature([params[0], *shared, *own]))
        return FlagsTask(run, help={**{n: FLAGS[n].metadata["help"] for n in names}, **(help or {})},
                         shorts={**{n: FLAGS[n].metadata["short"] for n in names}, **(shorts or {})},
                         positional=list(positional), incrementable=["verbose"] if "verbose" in names else [])

    return make


def dry_run(c: Any) -> bool:
    """Was Invoke's own --dry given (its config's run.dry)?"""
    try:
        return bool(c.config.run.dry)
    except AttributeError:
        return False


def resolve_inventory(path: str | None) -> tuple[Path, str]:
    """The inventory to use and where that choice came from: -i, then $PITUNNEL_INVENTORY, then
    ./inventory/hosts.yml; run from the checkout, its inventory/hosts.yml, else the lab's inventory/lab.yml."""
    if path:
        return Path(path), "-i"
    if os.environ.get(ENV_INVENTORY):
        return Path(os.environ[ENV_INVENTORY]), f"${ENV_INVENTORY}"
    if DEFAULT_INVENTORY.exists():
        return DEFAULT_INVENTORY, "./inventory/hosts.yml"
    if CHECKOUT:
        if (ROOT / DEFAULT_INVENTORY).exists() or not LAB_INVENTORY.exists():
            return ROOT / DEFAULT_INVENTORY, "the checkout's inventory/hosts.yml"
        return LAB_INVENTORY, "the lab's inventory (no inventory/hosts.yml; the lab is up)"
    return DEFAULT_INVENTORY, "./inventory/hosts.yml"


def load(path: str | None, *, check: bool, out: TextIO | None = None,
         reinstate: frozenset[str] = frozenset(), record: bool = True) -> Inventory:
    """The inventory, checked; auto ports are recorded in its ports file unless `check` or not `record` (a task
    that changes no host writes nothing on the laptop either)."""
    resolved, source = resolve_inventory(path)
    if not resolved.exists():
        init = f"pitunnel init -i {resolved}" if source == "-i" else "pitunnel init"
        raise Exit(f"no inventory at {resolved} (from {source}). Fix: `{init}` writes a first one there to fill "
                   f"in (or give yours with -i FILE or ${ENV_INVENTORY})", code=failures.USAGE)
    print(f"inventory: {resolved} (from {source})", file=out or sys.stderr, flush=True)
    try:
        inv = load_inventory(resolved, save_allocations=record and not check, reinstate=reinstate)
    except InventoryError as exc:
        raise Exit(str(exc), code=failures.USAGE) from None
    if inv.unrecorded and not record:  # verify, status: the ports they show are not the file's yet
        print(f"ports: auto ports not recorded yet ({', '.join(inv.unrecorded)}); a provisioning run records them in "
              f"{ports_file(resolved)}", file=out or sys.stderr, flush=True)
    for text in plain_http_names(inv.vps, inv.pis.values()):
        print(f"WARNING: {text}", file=out or sys.stderr, flush=True)
    for name in inv.shut:
        print(f"revoked: {name} (since {inv.revoked[name].since}) is left out of this run; to bring it back, "
              f"provision-pi --limit {name} once it has a new key (docs/operations.md)", file=out or sys.stderr,
              flush=True)
    return inv


@contextmanager
def ctrl_c() -> Iterator[list[bool]]:
    """Ctrl-C asks every host to stop after the converge in flight (pitunnel.runner.STOP), so each is left as
    after a whole step, and ends every connection still being opened (pitunnel.dial); a second Ctrl-C raises
    KeyboardInterrupt at once, and yields [True]: the caller exits without waiting for the hosts in flight."""
    STOP.clear()
    abandoned: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield abandoned
        return

    def again(signum: int, frame: FrameType | None) -> None:
        abandoned.append(True)
        raise KeyboardInterrupt

    def stop(signum: int, frame: FrameType | None) -> None:
        STOP.set()
        signal.signal(signal.SIGINT, again)
        abandon_logins()
        print("\ninterrupted: each host stops after the step in flight (Ctrl-C again to abandon it)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield abandoned
    finally:
        signal.signal(signal.SIGINT, previous)


def run_play(body: Callable[[Play], None], flags: Flags = Flags(), *, quiet: bool = False,
             out: TextIO | None = None, reinstate: bool = False,
             vet: Callable[[Inventory], None] | None = None, record: bool = True) -> Play:
    """Run `body` on a play of the inventory flags name, then the recap; raises Exit with the run's code
    (docs/cli.md) unless all went well. `out`: where the run's lines go (stdout if None). `reinstate`: the
    revoked Pis that --limit names are in the play (provision-pi brings them back with a new key). `vet`: checks
    the task's own arguments against the inventory (raises Exit) before any host is touched. `record`: False for
    the tasks that change nothing (verify, status): auto ports are allocated in memory, the ports file untouched."""
    flags.vet()
    failures.silence_paramiko()
    named = frozenset(n.strip() for n in flags.limit.split(",") if n.strip()) if reinstate else frozenset()
    inv = load(flags.inventory or None, check=flags.check, reinstate=named, record=record)
    if vet is not None:  # the task's own arguments against the inventory, before any host is touched
        vet(inv)
    try:
        play = Play.start(inv, flags.options(), quiet=quiet, out=out)
    except (BadLimit, BadSshConfig) as exc:  # nothing touched yet: the command line or the ssh config is wrong
        raise Exit(str(exc), code=failures.USAGE) from None
    except KeyboardInterrupt:  # at a password prompt: no host was touched
        raise Exit("\ninterrupted: no host was touched", code=failures.INTERRUPTED) from None
    with ctrl_c() as abandoned:
        try:
            body(play)
        except KeyboardInterrupt:
            STOP.set()
        finally:
            code = play.finish()
        if abandoned:  # Ctrl-C twice: the recap was the last word; hosts still in flight are not waited for
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(failures.INTERRUPTED)
    if flags.limit and not play.reporter.recaps:
        raise Exit(f"--limit {flags.limit!r} selects {', '.join(sorted(play.options.limit))}, but this task works on "
                   "none of them (the VPS tasks on VPSes, the Pi tasks on Pis)", code=failures.USAGE)
    if code:
        raise Exit(code=code)
    return play

