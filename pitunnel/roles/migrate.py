"""`invoke migrate --to NEW`: the Pis of one VPS moved to another, each Pi reachable through one or the other
throughout.

The order crosses hosts and the laptop's files, so it lives in the site layer. Each step is idempotent and
re-read from the inventory, its ports file and the hosts on every run:

    WIDEN     the Pis on OLD are seen (in memory) as `vps: [OLD, NEW]`, NEW's ports = OLD's (an auto port
              taken on NEW is mapped to a free one, and the run says so)
    PROVISION NEW and the Pis: both paths up
    VERIFY    each Pi through NEW; a Pi that fails stays on OLD, and the run fails for it
    REWRITE   hosts.migrate.yml (what is left to do) beside the inventory, the ports file, then the inventory
              itself: `vps: NEW` for the verified Pis (the old file kept as hosts.yml.bak)
    RETIRE    provision-pi again (OLD's instance retired on each Pi), then the Pis' keys and routes off OLD; if
              no Pi is left on OLD (and no --keep-old): OLD's whole pitunnel side torn down, with the packages
              pitunnel installed there (what `teardown --purge` does)

hosts.migrate.yml is what makes a rerun after RETIRE's start complete it: the inventory then no longer names
OLD for those Pis. It goes when RETIRE is done.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import yaml

from pitunnel import reconcile, yamlsrc
from pitunnel.inventory import Inventory, PiPath, PiSpec, TunnelSpec, load_inventory, ports_file
from pitunnel.inventory import ports as ports_lock
from pitunnel.inventory.rewrite import CannotRewrite, set_pi_vps
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.runner import converge
from pitunnel.roles import site
from pitunnel.roles.probes.verify import verify
from pitunnel.roles.vps import steps as vps

class MigrateRefused(ValueError):
    """The move cannot start as asked (said before any host is touched)."""


def state_file(inventory: Path) -> Path:
    """What is left of an unfinished move: hosts.yml -> hosts.migrate.yml."""
    return inventory.with_name(inventory.stem + ".migrate.yml")


def read_state(inventory: Path) -> tuple[str, str, list[str]] | None:
    """(old, new, Pis) of an unfinished move, or None."""
    file = state_file(inventory)
    if not file.exists():
        return None
    data = yamlsrc.load_file(file).data
    if not isinstance(data, dict) or not isinstance(data.get("pis"), list):
        raise MigrateRefused(f"{file}: not a migrate state file (from:, to:, pis:): remove it if no move is under way")
    return str(data["from"]), str(data["to"]), [str(p) for p in data["pis"]]


def write_state(inventory: Path, old: str, new: str, pis: list[str]) -> None:
    file = state_file(inventory)
    text = ("# An unfinished `invoke migrate`: rerun `invoke migrate --to " + new + "` to complete it.\n" +
            yaml.safe_dump({"from": old, "to": new, "pis": pis}, sort_keys=False))
    temporary = file.with_name(file.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, file)


def new_ports(inv: Inventory, path: PiPath, new: str) -> tuple[tuple[TunnelSpec, int], ...]:
    """Each tunnel of `path` (a Pi through its one VPS now) with its port on NEW: the one it has there, unless
    another tunnel holds it on NEW (an auto port then gets the lowest free one; an explicit one is refused)."""
    spec = inv.vps[new]
    taken = {spec.port, spec.http_port, spec.https_port} | {t.remote_port for _, t in inv.tunnels_on(spec)}
    auto = set(ports_lock.read_ports(ports_file(inv.path))[0].get(path.vps, {}))
    clash = [t for t in path.tunnels if t.remote_port in taken]
    taken |= {t.remote_port for t in path.tunnels}  # the numbers kept first, the clashing ones mapped after
    low, high = spec.port_range
    mapped: dict[str, int] = {}
    for t in clash:
        if f"{path.name}/{t.name}" not in auto:
            raise MigrateRefused(f"pis.{path.name}.tunnels.{t.name}.remote_port {t.remote_port} is taken on {new}: "
                                 "give it another port (or `auto`) in the inventory, then rerun migrate")
        port = next((p for p in range(low, high + 1) if p not in taken), 0)
        if not port:
            raise MigrateRefused(f"no free port left in {new}'s port_range {low}-{high} for {path.name}/{t.name}")
        taken.add(port)
        mapped[t.name] = port
    return tuple((t, mapped.get(t.name, t.remote_port)) for t in path.tunnels)


def widened(inv: Inventory, moving: list[PiSpec], new: str) -> tuple[Inventory, list[str]]:
    """The inventory with the moving Pis on both VPSes (their old one first), and a line per mapped port."""
    pis = dict(inv.pis)
    said = []
    for pi in moving:
        tunnels, now = [], pi.first_path  # its one VPS now
        for t, port in new_ports(replace(inv, pis=dict(pis)), now, new):  # the Pis moved before it included
            if port != t.remote_port:
                said.append(f"{pi.name}/{t.name}: port {t.remote_port} is taken on {new}: it gets {port} there")
            tunnels.append(replace(t, ports=((now.vps, t.remote_port), (new, port))))
        pis[pi.name] = replace(pi, vpses=(now.vps, new), tunnels=tuple(tunnels))
    return replace(inv, pis=pis), said


def ports_follow(inv: Inventory, wide: Inventory, moved: list[str], old: str, new: str) -> None:
    """The ports file: the moved Pis' auto ports recorded on NEW (the numbers they have there), off OLD."""
    lock = ports_file(inv.path)
    recorded, _ = ports_lock.read_ports(lock)
    for name in moved:
        for tunnel_id in [i for i in recorded.get(old, {}) if i.startswith(f"{name}/")]:
            tunnel = next(t for t in wide.pis[name].tunnels if t.name == tunnel_id.split("/", 1)[1])
            recorded.setdefault(new, {})[tunnel_id] = tunnel.port_on(new)
            del recorded[old][tunnel_id]
    ports_lock.write_ports(lock, {v: p for v, p in recorded.items() if p})


class Migration:
    def __init__(self, play: Play, new: str, keep_old: bool) -> None:
        self.play, self.new, self.keep_old = play, new, keep_old
        self.applied = reconcile.Applied()  # tests kill the run after a step: a rerun completes the move

    def run(self) -> None:
        play, new = self.play, self.new
        inv, reporter, mode = play.inventory, play.reporter, play.options.mode
        if new not in inv.vps:
            raise MigrateRefused(f"--to {new}: no VPS of that name in {inv.path} (VPSes: {', '.join(inv.vps)}): "
                                 "define it under vps: first")
        state = read_state(inv.path)
        if state is not None and state[1] != new:
            raise MigrateRefused(f"a move to {state[1]} is unfinished ({state_file(inv.path)}): "
                                 f"rerun `invoke migrate --to {state[1]}` first")
        pending = state[2] if state else []
        moving = [p for p in play.selected(inv.pis.values()) if len(p.all_vps) == 1 and p.first_vps != new]
        olds = {p.first_vps for p in moving} | ({state[0]} if state else set())
        if len(olds) > 1:
            raise MigrateRefused(f"the Pis selected are on several VPSes ({', '.join(sorted(olds))}): move one VPS's "
                                 "Pis at a time (--limit)")
        if not olds:
            reporter.note(new, f"migrate: no Pi to move (every selected Pi is on {new}, or on several VPSes)")
            return
        old = olds.pop()
        # the VPSes' steps run with the Pis', whatever --limit selected
        with play.narrowed(limit=play.options.limit | {old, new} if play.options.limit else frozenset()):
            verified = self.move(moving, old) if moving else []
            if mode.check and pending:
                reporter.note(new, f"then: {', '.join(pending)} provisioned on {new} alone, and {old} left")
            if mode.check or not (pending or verified):
                return
            self.retire(sorted({*pending, *verified}), old)

    def move(self, moving: list[PiSpec], old: str) -> list[str]:
        """WIDEN, PROVISION, VERIFY, REWRITE; the Pis verified through NEW."""
        play, new, inv = self.play, self.new, self.play.inventory
        wide, said = widened(inv, moving, new)
        for line in said:
            play.reporter.note(new, line)
        with play.narrowed(inventory=wide):
            return self.on_both(moving, old, inv, wide)

    def on_both(self, moving: list[PiSpec], old: str, inv: Inventory, wide: Inventory) -> list[str]:
        """The moving Pis on both VPSes (`wide`), each verified through NEW; the inventory says NEW for those."""
        play, new = self.play, self.new
        site.provision(play)
        self.applied.done()
        if play.options.check:
            play.reporter.note(new, f"then: each Pi verified through {new}, the inventory rewritten to `vps: {new}`, "
                                    f"and {old} left (its side torn down unless Pis stay on it or --keep-old)")
            return []
        reports = {r.pi: r for r in verify(play) if r.vps == new}
        verified = []
        for pi in moving:
            report = reports.get(pi.name)
            if report is not None and report.passed:
                play.reporter.line(pi.name, "ok", f"migrate: verified through {new}", f"every check of {pi.name} via {new}")
                verified.append(pi.name)
            else:
                why = "; ".join(f"{c.name}: {c.detail}" for c in (report.checks if report else []) if not c.passed)
                play.reporter.line(pi.name, "failed", f"migrate: verified through {new}",
                                   f"{why or 'not verified'}: it stays on {old} (both paths up); fix it and rerun")
                play.failed.add(pi.name)
        self.applied.done()
        if verified:
            state = read_state(inv.path)
            write_state(inv.path, old, new, sorted({*(state[2] if state else []), *verified}))
            ports_follow(inv, wide, verified, old, new)
            try:
                changed = set_pi_vps(inv.path, verified, new)
            except CannotRewrite as exc:
                raise MigrateRefused(str(exc)) from None
            play.reporter.line(new, "changed" if changed else "ok", "inventory says the new VPS",
                               f"{inv.path}: vps: {new} for {', '.join(verified)} (as it was: {inv.path.name}.bak)")
        self.applied.done()
        return verified

    def retire(self, moved: list[str], old: str) -> None:
        """RETIRE: the moved Pis provisioned from the rewritten inventory (OLD's instance goes), then OLD's side."""
        play, new = self.play, self.new
        inv = load_inventory(play.inventory.path)
        moved = [p for p in moved if p in inv.pis and inv.pis[p].all_vps == (new,)]
        with play.narrowed(inventory=inv):
            with play.narrowed(limit=frozenset({*moved, new})):
                site.provision_pi(play)
            self.applied.done()
            left = [p.name for p in inv.pis.values() if old in p.all_vps]
            if any(p in play.failed for p in moved):
                return

            def leave(remote: Remote) -> None:
                if left or self.keep_old:
                    vps.unauthorise(remote, inv, inv.vps[old], frozenset(moved), play.reporter, play.options.mode)
                else:
                    converge(remote, vps.teardown_ops(inv.vps[old], purge=True), play.reporter, play.options.mode,
                             vps.handlers(remote))

            with play.narrowed(limit=frozenset({old})):
                play.each([inv.vps[old]], leave)
                if (left or self.keep_old) and old not in play.failed:
                    site.provision_vps(play)  # its Nginx serves the Pis left on it only
        if old in play.failed:
            return  # named in the recap; a rerun completes it
        state_file(inv.path).unlink(missing_ok=True)
        play.reporter.line(new, "ok", f"migrate to {new} done",
                           f"{', '.join(moved)} through {new} only; {old}: "
                           + ("kept (--keep-old)" if self.keep_old else f"still serves {', '.join(left)}" if left
                              else "pitunnel's side torn down"))
        self.applied.done()


def migrate(play: Play, new: str, *, keep_old: bool) -> None:
    """`invoke migrate --to NEW`."""
    Migration(play, new, keep_old).run()
