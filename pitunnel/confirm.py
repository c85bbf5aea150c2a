"""The question teardown and migrate ask before they remove anything: per host what goes, then y/N on the
terminal. `--yes` skips it; with no terminal and no `--yes` they refuse (exit 3), and no host is touched
either way until the answer is yes. `--check` changes nothing, so it asks nothing (docs/cli.md)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

from invoke import Exit

from . import failures
from .inventory import Inventory, PiSpec
from .play import BadLimit, resolve_limit

PURGED_VPS = "nginx, certbot and node-exporter if pitunnel installed them, pitunnel's certificates and ACME account"


def selected_pis(inv: Inventory, limit: str) -> tuple[list[PiSpec], frozenset[str]] | None:
    """The Pis --limit selects and the names it selects (every host without --limit); None for a --limit that
    selects nothing (Play.start then refuses it, before any host too)."""
    try:
        names = resolve_limit(frozenset(n.strip() for n in limit.split(",") if n.strip()), inv)
    except BadLimit:
        return None
    names = names or frozenset(h.name for h in inv.hosts())
    return [p for p in inv.pis.values() if p.name in names], names


def teardown_plan(inv: Inventory, limit: str, *, purge: bool) -> list[str]:
    """What `teardown` removes, a line per host, in the order it goes."""
    found = selected_pis(inv, limit)
    if found is None:
        return []
    pis, names = found
    lines = [f"{p.name} (Pi): its tunnel units (to {', '.join(p.all_vps)}), their watchdog, pitunnel's files and "
             f"sshd drop-ins, the tunnel account {p.tunnel_user} or its key"
             + (", the autossh package" if purge else "") for p in pis]
    for vps in inv.vps.values():
        if vps.name in names:
            lines.append(f"{vps.name} (VPS): the tunnel account {vps.tunnel_user} with every Pi's key, its sshd "
                         f"Match block, the reaper, pitunnel's Nginx sites and metrics" + (f", {PURGED_VPS}" if purge else ""))
        elif any(vps.name in p.all_vps for p in pis):
            lines.append(f"{vps.name} (VPS): the keys of {', '.join(p.name for p in pis if vps.name in p.all_vps)} "
                         "(its tunnel account and the other Pis stay)")
    return lines


def migrate_plan(inv: Inventory, limit: str, to: str, *, keep_old: bool) -> list[str]:
    """What `migrate --to TO` moves and removes, a line per host, and the inventory it rewrites."""
    found = selected_pis(inv, limit)
    if found is None or to not in inv.vps:
        return []  # migrate itself refuses such a move before any host
    moving = [p for p in found[0] if len(p.all_vps) == 1 and p.first_vps != to]
    lines = [f"{p.name} (Pi): its tunnel moves from {p.first_vps} to {to}; its unit to {p.first_vps} is removed once "
             f"it is verified through {to}" for p in moving]
    for old in dict.fromkeys(p.first_vps for p in moving):
        lines.append(f"{old} (VPS): " + ("its pitunnel side stays (--keep-old)" if keep_old else
                                         "its pitunnel side (tunnel account, sshd Match block, Nginx sites) is "
                                         f"removed once no Pi is left on it"))
    if moving:
        lines.append(f"{inv.path}: rewritten to {to} ({inv.path.name}.bak kept)")
    return lines


def confirm(task: str, plan: Iterable[str], *, yes: bool, check: bool, stdin: TextIO | None = None,
            out: TextIO | None = None) -> None:
    """Ask before `task` removes what `plan` lists; raises Exit (3: nothing touched) unless the answer is yes.
    Asks nothing with --yes or --check, or when there is nothing to remove."""
    lines = list(plan)
    if yes or check or not lines:
        return
    stdin, out = stdin or sys.stdin, out or sys.stderr
    if not stdin.isatty():
        raise Exit(f"{task}: asks before it removes anything, but there is no terminal to ask on: add --yes to run it "
                   "unattended (nothing was touched)", code=failures.USAGE)
    print(f"{task} will remove:", file=out)
    for line in lines:
        print(f"  {line}", file=out)
    print(f"Go on with {task}? [y/N] ", end="", file=out, flush=True)
    try:
        answer = stdin.readline()
    except KeyboardInterrupt:
        raise Exit("\ninterrupted: no host was touched", code=failures.INTERRUPTED) from None
    if answer.strip().lower() not in ("y", "yes"):
        raise Exit(f"{task}: not confirmed, nothing was touched", code=failures.USAGE)
