"""Running a play: read secrets up front, open one connection per host, run a function per host in
parallel (one host's failure never stops another), and end with the recap and an exit code."""

from __future__ import annotations

import fnmatch
import getpass
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TextIO, TypeVar

from . import failures, sshdebug
from .hostkeys import HostKeyRefused
from .inventory import HostSpec, Inventory
from .remote import Credentials, HostCannotRun, Remote, SudoRefused, Unreachable, remotes_for
from .report import Reporter
from .runner import STOP, Interrupted, Mode, StepFailed

T = TypeVar("T")
H = TypeVar("H", bound=HostSpec)


@dataclass
class Options:
    """How the user asked this run to behave (the flags shared by every task)."""

    check: bool = False
    diff: bool = False
    limit: frozenset[str] = frozenset()
    accept_new_host_keys: bool = False
    accept_changed_host_key: str = ""
    prompt_login_password: bool = False
    prompt_sudo_password: bool = False
    verbose: bool = False
    ssh_debug: bool = False  # -vv: the SSH handshake and each login attempt (pitunnel.sshdebug)
    forks: int = 32  # hosts worked on at once by each `each`

    @property
    def mode(self) -> Mode:
        return Mode(check=self.check, diff=self.diff)


@dataclass
class Play:
    inventory: Inventory
    options: Options
    reporter: Reporter
    remotes: dict[str, Remote] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)  # hosts whose work failed or that were unreachable: done for this run
    why: dict[str, str] = field(default_factory=dict)  # host -> why it could not be reached
    interrupted: set[str] = field(default_factory=set)  # hosts stopped by Ctrl-C
    described: set[str] = field(default_factory=set)  # hosts whose connection settings -v has shown

    @classmethod
    def start(cls, inventory: Inventory, options: Options, *, quiet: bool = False, out: TextIO | None = None) -> "Play":
        options = replace(options, limit=resolve_limit(options.limit, inventory))
        reporter = Reporter(show_diff=options.diff, quiet=quiet, out=out)
        play = cls(inventory, options, reporter)
        login = getpass.getpass("Login password (first contact): ") if options.prompt_login_password else None
        sudo = getpass.getpass("sudo password: ") if options.prompt_sudo_password else None
        creds = {host.name: Credentials(login_password=login or _read_secret(host.password_file),
                                        sudo_password=sudo or _read_secret(host.sudo_password_file))
                 for host in inventory.hosts()}
        if options.ssh_debug:  # -vv
            for c in creds.values():
                sshdebug.secret(c.login_password)
                sshdebug.secret(c.sudo_password)
            sshdebug.enable({(h.address, h.port): h.name for h in inventory.hosts()})
        play.remotes = remotes_for(inventory, creds, accept_new=options.accept_new_host_keys)  # or BadSshConfig
        for remote in play.remotes.values():
            remote.notify, remote.busy = partial(reporter.note, remote.name), partial(reporter.busy, remote.name)
            remote.echo = _echo(reporter, remote.name) if options.verbose else None
            remote.accept_changed_host_key, remote.on_change = options.accept_changed_host_key, reporter.line
        return play

    def describe(self, hosts: Iterable[HostSpec]) -> None:
        """-v: each host's connection settings and where they came from, once, when the run first works on it
        (so `provision-vps -v` shows the VPS's alone)."""
        for h in hosts if self.options.verbose else ():
            if h.name not in self.described:
                self.described.add(h.name)
                for line in self.remotes[h.name].describe():  # a quiet play (verify, status) prints its table on stdout
                    print(f"{'':<12} {h.name:<10} {line}", file=sys.stderr if self.reporter.quiet else sys.stdout)

    def selected(self, hosts: Iterable[H]) -> list[H]:
        return [h for h in hosts if not self.options.limit or h.name in self.options.limit]

    def each_selected(self, hosts: Iterable[HostSpec], work: Callable[[Remote], T]) -> dict[str, T]:
        """`each` on the hosts of `hosts` that --limit selects."""
        return self.each(self.selected(hosts), work)

    @contextmanager
    def narrowed(self, *, inventory: Inventory | None = None, limit: frozenset[str] | None = None) -> Iterator[Play]:
        """This play with another inventory or --limit for the `with` block; both as they were after it,
        whatever happens inside."""
        kept = self.inventory, self.options
        try:
            if inventory is not None:
                self.inventory = inventory
            if limit is not None:
                self.options = replace(self.options, limit=limit)
            yield self
        finally:
            self.inventory, self.options = kept

    def connect_ahead(self) -> None:
        """Start opening, in the background and all at once, the connections of the selected Pis and of their
        VPSes: a Pi's own address and its VPS (its way in through its tunnel) are dialled together, so hosts
        that do not answer cost one connect_timeout in all, not one per step or per Pi. Each `each` takes its
        host's connection when it is open, or the reason it could not be (a Link tries a host once per run).
        At most --forks are being opened at once."""
        pis = self.selected(self.inventory.pis.values())
        slots = threading.BoundedSemaphore(max(1, self.options.forks))
        for host in [*self.inventory.vpses_of_pis(pis), *pis]:
            if host.name not in self.failed:
                threading.Thread(target=_connect, args=(self.remotes[host.name], slots), daemon=True,
                                 name=f"connect-{host.name}").start()

    def each(self, hosts: Sequence[HostSpec], work: Callable[[Remote], T]) -> dict[str, T]:
        """Run work(remote) for every host in parallel; failures are reported, not raised, and the host is
        left out of every later `each` of this play."""
        results: dict[str, T] = {}
        for h in hosts:  # the recap lists every host played, in the order first played, whether it printed or not
            self.reporter.recap(h.name)
        live = [h for h in hosts if h.name not in self.failed and not STOP.is_set()]
        self.describe(live)
        self.interrupted.update(h.name for h in hosts if STOP.is_set() and h.name not in self.failed)
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.options.forks, len(live))))
        futures = {h.name: pool.submit(self._guarded, self.remotes[h.name], work) for h in live}
        try:
            wait(futures.values())
        except KeyboardInterrupt:  # a second Ctrl-C: the hosts in flight are abandoned, not waited for
            self.interrupted.update(name for name, future in futures.items() if not future.done())
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        for name, future in futures.items():
            ok, value = future.result()
            if ok:
                results[name] = value  # type: ignore[assignment]
            elif name not in self.interrupted:
                self.failed.add(name)
        return results

    def _guarded(self, remote: Remote, work: Callable[[Remote], T]) -> tuple[bool, T | None]:
        sshdebug.CURRENT.host = remote.name
        try:
            return True, work(remote)
        except Interrupted:
            self.interrupted.add(remote.name)
            self.reporter.note(remote.name, "interrupted: stopped after the step in flight")
            return False, None
        except (Unreachable, HostKeyRefused) as exc:
            if STOP.is_set():  # Ctrl-C abandoned its connection: not reached, and not a fault of the host
                self.interrupted.add(remote.name)
                return False, None
            self.why[remote.name] = str(exc)
            self.reporter.line(remote.name, "unreachable", "connect", str(exc))
        except SudoRefused as exc:
            self.reporter.line(remote.name, "failed", "sudo", str(exc))
        except HostCannotRun as exc:  # the host's own trouble (a read-only or full /tmp), with its error and a hint
            self.reporter.line(remote.name, "failed", "run a script", str(exc))
        except StepFailed:
            pass  # already reported, with what was rolled back
        except Exception as exc:  # a bug or an unexpected answer: name it, keep the other hosts going
            self.reporter.line(remote.name, "failed", "internal error", f"{type(exc).__name__}: {exc}")
        return False, None

    def finish(self) -> int:
        """Close every connection; after a Ctrl-C, say what was done and which hosts were never reached; then
        the recap, the run's last words (a host still in flight after a second Ctrl-C prints nothing more)."""
        for name, remote in self.remotes.items():
            if name in self.reporter.recaps:
                self.reporter.recaps[name].round_trips = remote.round_trips
                self.reporter.recaps[name].interrupted = name in self.interrupted and remote.path is None
            remote.close()
        if STOP.is_set():
            print(f"interrupted: {'; '.join(self._stopped())}. A rerun carries on "
                  "from where each host is (every step is idempotent)", file=sys.stderr, flush=True)
        self.reporter.print_recap()
        recaps = self.reporter.recaps
        unreachable = any(r.unreachable for r in recaps.values())
        failed = any(r.failed for r in recaps.values()) or any(
            name in recaps and not recaps[name].unreachable for name in self.failed)
        if STOP.is_set():
            return failures.INTERRUPTED
        return failures.exit_code(failed=failed, unreachable=unreachable)

    def _stopped(self) -> list[str]:
        """What an interrupted run had done, for its last line before the recap."""
        changed = [f"{h} {r.changed}" for h, r in self.reporter.recaps.items() if r.changed]
        stopped = sorted(self.interrupted)
        return [f"changed so far: {', '.join(changed) or 'nothing'}",
                *([f"stopped before their next step: {', '.join(stopped)}"] if stopped else [])]


def _connect(remote: Remote, slots: threading.BoundedSemaphore) -> None:
    """Open `remote`'s connection (connect_ahead) in one of the --forks slots: a failure is kept by the Link,
    and reported by `each`."""
    with slots:
        if STOP.is_set():
            return
        try:
            remote.connection()
        except Exception:  # the first `each` on this host meets it again, and reports it
            pass


class BadLimit(ValueError):
    """A --limit that names nothing in the inventory."""


ROLE_NAMES = {"vps": "vps", "pis": "pi"}  # --limit vps / --limit pis: every host of that role


def resolve_limit(patterns: frozenset[str], inventory: Inventory) -> frozenset[str]:
    """The host names a --limit selects: each pattern is a host's name, a role name (`vps`, `pis`) or a glob
    (`pi*`, fnmatch); a host's own name wins over a role name. A pattern after `!` takes its hosts out again
    (`pis,!pi3`; a limit of exclusions alone starts from every host). Raises BadLimit for a pattern matching
    nothing, or a limit that leaves no host."""
    names = [h.name for h in inventory.hosts()]
    wanted = frozenset(p for p in patterns if not p.startswith("!"))
    dropped = frozenset(p[1:].strip() for p in patterns if p.startswith("!"))
    chosen = _matching(wanted, inventory) if wanted or not dropped else frozenset(names)
    left = chosen - _matching(dropped, inventory, negated=True)
    if dropped and not left:
        raise BadLimit(f"--limit {','.join(sorted(patterns))!r} leaves no host: every host it selects is excluded "
                       "by a `!` pattern. Fix: exclude fewer hosts")
    return left


def _matching(patterns: frozenset[str], inventory: Inventory, *, negated: bool = False) -> frozenset[str]:
    hosts = list(inventory.hosts())
    names = [h.name for h in hosts]
    chosen: set[str] = set()
    for pattern in sorted(patterns):
        if pattern in names:
            found = [pattern]
        elif pattern in ROLE_NAMES:
            found = [h.name for h in hosts if h.role == ROLE_NAMES[pattern]]
        else:
            found = fnmatch.filter(names, pattern)
        if not found and negated and pattern in inventory.shut:
            continue  # left out already
        if not found and pattern in inventory.shut:
            raise BadLimit(f"--limit {pattern!r}: {pattern} is revoked (since {inventory.revoked[pattern].since}): "
                           f"every task leaves it out but provision-pi and provision, which take it back only with a "
                           f"new key made on it (docs/operations.md)")
        if not found:
            raise BadLimit(f"--limit {('!' if negated else '') + pattern!r} matches no host of {inventory.path} (hosts: "
                           f"{', '.join(names)}; also `vps`, `pis`, globs like 'pi*', and !PATTERN to leave hosts out)")
        chosen.update(found)
    return frozenset(chosen)


def _echo(reporter: Reporter, host: str) -> Callable[[str], None]:
    return lambda text: reporter.echo(host, text)


def _read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    return path.read_text().rstrip("\n")
