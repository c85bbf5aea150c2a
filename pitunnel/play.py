"""Running a play: read secrets up front, open one connection per host, run a function per host in
parallel (one host's failure never stops another), and end with the recap and an exit code."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .hostkeys import HostKeyRefused
from .inventory import HostSpec, Inventory
from .remote import Credentials, Remote, SudoRefused, Unreachable
from .report import Reporter
from .runner import Mode, StepFailed

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

    @classmethod
    def start(cls, inventory: Inventory, options: Options, *, quiet: bool = False) -> "Play":
        unknown = sorted(options.limit - {h.name for h in inventory.hosts()})
        if unknown:
            raise SystemExit(f"--limit names unknown hosts: {', '.join(unknown)} "
                             f"(hosts: {', '.join(h.name for h in inventory.hosts())})")
        reporter = Reporter(show_diff=options.diff, quiet=quiet)
        play = cls(inventory, options, reporter)
        login = getpass.getpass("Login password (first contact): ") if options.prompt_login_password else None
        sudo = getpass.getpass("sudo password: ") if options.prompt_sudo_password else None
        for host in inventory.hosts():
            creds = Credentials(
                login_password=login or _read_secret(host.password_file),
                sudo_password=sudo or _read_secret(host.sudo_password_file),
            )
            play.remotes[host.name] = Remote(host, inventory.settings.known_hosts, creds,
                                             accept_new_host_keys=options.accept_new_host_keys,
                                             accept_changed_host_key=options.accept_changed_host_key,
                                             on_change=reporter.line)
        return play

    def selected(self, hosts: Sequence[H]) -> list[H]:
        return [h for h in hosts if not self.options.limit or h.name in self.options.limit]

    def each(self, hosts: Sequence[HostSpec], work: Callable[[Remote], T]) -> dict[str, T]:
        """Run work(remote) for every host in parallel; failures are reported, not raised, and the host is
        left out of every later `each` of this play."""
        results: dict[str, T] = {}
        for h in hosts:  # the recap lists every host played, in the order first played, whether it printed or not
            self.reporter.recap(h.name)
        live = [h for h in hosts if h.name not in self.failed]
        with ThreadPoolExecutor(max_workers=max(1, min(32, len(live)))) as pool:
            futures = {h.name: pool.submit(self._guarded, self.remotes[h.name], work) for h in live}
        for name, future in futures.items():
            ok, value = future.result()
            if ok:
                results[name] = value  # type: ignore[assignment]
            else:
                self.failed.add(name)
        return results

    def _guarded(self, remote: Remote, work: Callable[[Remote], T]) -> tuple[bool, T | None]:
        try:
            return True, work(remote)
        except (Unreachable, HostKeyRefused) as exc:
            self.reporter.line(remote.name, "unreachable", "connect", str(exc))
        except SudoRefused as exc:
            self.reporter.line(remote.name, "failed", "sudo", str(exc))
        except StepFailed:
            pass  # already reported, with what was rolled back
        except Exception as exc:  # a bug or an unexpected answer: name it, keep the other hosts going
            self.reporter.line(remote.name, "failed", "internal error", f"{type(exc).__name__}: {exc}")
        return False, None

    def finish(self) -> int:
        for name, remote in self.remotes.items():
            if name in self.reporter.recaps:
                self.reporter.recaps[name].round_trips = remote.round_trips
            remote.close()
        self.reporter.print_recap()
        return 1 if self.failed else 0


def _read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    return path.read_text().rstrip("\n")
