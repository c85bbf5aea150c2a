"""What every provisioning task shares: its flags, loading the inventory, and turning problems into exits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypedDict

from invoke import Exit

from .inventory import Inventory, InventoryError, load_inventory
from .play import Options, Play

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INVENTORY = ROOT / "inventory" / "hosts.yml"
LAB_INVENTORY = ROOT / "inventory" / "lab.yml"

COMMON_HELP = {
    "inventory": "inventory file (default inventory/hosts.yml, or inventory/lab.yml when that does not exist "
                 "and the lab is up)",
    "check": "read every host for real but change nothing; report what would change",
    "diff": "show a unified diff of every file that changes or would change (secrets masked)",
    "limit": "only these hosts: NAME[,NAME...]",
    "accept_new_host_keys": "record host keys seen for the first time in the known_hosts file "
                            "(check their fingerprints first); a changed key is refused always",
    "prompt_for_login_password": "ask for the SSH login password (first contact with a fresh Pi)",
    "prompt_for_sudo_password": "ask for the sudo password (never logged, never on a command line)",
}


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


class Flags(TypedDict):
    """The flags every provisioning task takes (COMMON_HELP), as run_play takes them."""

    inventory: str
    check: bool
    diff: bool
    limit: str
    accept_new_host_keys: bool
    prompt_for_login_password: bool
    prompt_for_sudo_password: bool


def flags(scope: Mapping[str, object]) -> Flags:
    """The shared flags out of a task's arguments (its `locals()`), to pass on to run_play."""
    return Flags(inventory=str(scope["inventory"]), check=bool(scope["check"]), diff=bool(scope["diff"]),
                 limit=str(scope["limit"]), accept_new_host_keys=bool(scope["accept_new_host_keys"]),
                 prompt_for_login_password=bool(scope["prompt_for_login_password"]),
                 prompt_for_sudo_password=bool(scope["prompt_for_sudo_password"]))


def run_play(body: Callable[[Play], None], *, inventory: str | None = None, check: bool = False, diff: bool = False,
             limit: str = "", accept_new_host_keys: bool = False, prompt_for_login_password: bool = False,
             prompt_for_sudo_password: bool = False, quiet: bool = False) -> Play:
    inv = load(inventory or None, check=check)
    options = Options(check=check, diff=diff,
                      limit=frozenset(n.strip() for n in limit.split(",") if n.strip()),
                      accept_new_host_keys=accept_new_host_keys,
                      prompt_login_password=prompt_for_login_password,
                      prompt_sudo_password=prompt_for_sudo_password)
    play = Play.start(inv, options, quiet=quiet)
    try:
        body(play)
    finally:
        code = play.finish()
    if code:
        raise Exit(code=code)
    return play
