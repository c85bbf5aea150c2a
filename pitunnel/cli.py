"""What every provisioning task shares: its flags (declared once, in Flags), loading the inventory, and
turning problems into exits."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from invoke import Exit, Task

from .inventory import Inventory, InventoryError, load_inventory
from .play import Options, Play

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INVENTORY = ROOT / "inventory" / "hosts.yml"
LAB_INVENTORY = ROOT / "inventory" / "lab.yml"

T = TypeVar("T")


def flag(default: T, short: str, help: str) -> T:
    """One shared flag: its default, its short flag (-x) and its help line in `invoke --help TASK`."""
    return field(default=default, metadata={"short": short, "help": help})


@dataclass(frozen=True)
class Flags:
    """The flags every provisioning task shares; each field is one flag (--name, with `_` as `-`)."""

    inventory: str = flag("", "i", "inventory file (default inventory/hosts.yml, or inventory/lab.yml when that "
                                   "does not exist and the lab is up)")
    check: bool = flag(False, "c", "read every host for real but change nothing; report what would change")
    diff: bool = flag(False, "d", "show a unified diff of every file that changes or would change (secrets masked)")
    limit: str = flag("", "l", "only these hosts: NAME[,NAME...]")
    accept_new_host_keys: bool = flag(False, "a", "record host keys seen for the first time in the known_hosts file "
                                                  "(check their fingerprints first); a changed key is refused always")
    accept_changed_host_key: str = flag("", "k", "SHA256:... of a host's NEW key, read on its console after a reinstall: "
                                                 "that key (and no other) replaces the host's old ones in known_hosts")
    prompt_for_login_password: bool = flag(False, "p", "ask for the SSH login password (first contact with a fresh Pi)")
    prompt_for_sudo_password: bool = flag(False, "r", "ask for the sudo password (never logged, never on a command "
                                                      "line)")

    def options(self) -> Options:
        """How the engine takes them."""
        return Options(check=self.check, diff=self.diff,
                       limit=frozenset(n.strip() for n in self.limit.split(",") if n.strip()),
                       accept_new_host_keys=self.accept_new_host_keys,
                       accept_changed_host_key=self.accept_changed_host_key.strip(),
                       prompt_login_password=self.prompt_for_login_password,
                       prompt_sudo_password=self.prompt_for_sudo_password)


FLAGS = {f.name: f for f in fields(Flags)}


class FlagsTask(Task):
    """An Invoke task whose shared flags keep the short flags Flags gives them, whatever else it takes;
    its own flags get theirs as Invoke picks them, from the letters left."""

    def __init__(self, body: Callable[..., Any], *, shorts: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        self.shorts = dict(shorts)

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names | set(self.shorts.values()))
        if name in self.shorts:
            opts["names"] = [opts["names"][0], self.shorts[name]]
        return opts


def provisioning_task(*, flags: Iterable[str] = tuple(FLAGS), help: Mapping[str, str] | None = None,
                      shorts: Mapping[str, str] | None = None) -> Callable[[Callable[..., None]], FlagsTask]:
    """A task taking the shared `flags` (all by default) as one Flags argument named `flags`, after the
    Context; Invoke sees each of them as a flag of its own. `help` is for the task's own arguments;
    `shorts` overrides a shared flag's short flag for this task."""
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
            body(c, Flags(**given), **kwargs)

        setattr(run, "__signature__", inspect.Signature([params[0], *shared, *own]))
        return FlagsTask(run, help={**{n: FLAGS[n].metadata["help"] for n in names}, **(help or {})},
                         shorts={n: (shorts or {}).get(n, FLAGS[n].metadata["short"]) for n in names})

    return make


def resolve_inventory(path: str | None) -> Path:
    if path:
        return Path(path)
    if DEFAULT_INVENTORY.exists() or not LAB_INVENTORY.exists():
        return DEFAULT_INVENTORY
    return LAB_INVENTORY


def load(path: str | None, *, check: bool) -> Inventory:
    resolved = resolve_inventory(path)
    if not resolved.exists():
        raise Exit(f"no inventory at {resolved}: copy inventory/example.yml to inventory/hosts.yml and edit it, "
                   "or run `invoke lab.up` to get inventory/lab.yml", code=2)
    try:
        return load_inventory(resolved, save_allocations=not check)
    except InventoryError as exc:
        raise Exit(str(exc), code=2) from None


def run_play(body: Callable[[Play], None], flags: Flags = Flags(), *, quiet: bool = False) -> Play:
    inv = load(flags.inventory or None, check=flags.check)
    play = Play.start(inv, flags.options(), quiet=quiet)
    try:
        body(play)
    finally:
        code = play.finish()
    if code:
        raise Exit(code=code)
    return play
