"""`invoke migrate --to NEW`: the Pis of one VPS moved to another, each Pi reachable through one or the other
throughout.

The order crosses hosts and the laptop's files: a state machine pitunnel/reconcile.py drives, its state the
inventory and the state file (read again after every step) and what this run did; every step is a converge,
idempotent, reading the hosts itself. Before any host, the moving Pis are seen (in memory) as
`vps: [OLD, NEW]`, NEW's ports = OLD's (an auto port taken on NEW is mapped to a free one, and the run says
so; an explicit one is refused). Then:

    PROVISION NEW and the Pis: both paths up
    VERIFY    each Pi through NEW; a Pi that fails stays on OLD, and the run fails for it
    REWRITE   hosts.migrate.yml (what is left to do) beside the inventory, the ports file, then the inventory
              itself: `vps: NEW` for the verified Pis (the old file kept as hosts.yml.bak)
    RETIRE    provision-pi again (OLD's instance retired on each Pi)
    LEAVE     the Pis' keys and routes off OLD; if no Pi is left on OLD (and no --keep-old): OLD's whole
              pitunnel side torn down, with the packages pitunnel installed there (what `teardown --purge` does)

A host that fails RETIRE or LEAVE halts the move there (HALTED: the host said why, the recap names it); a
Pi that fails PROVISION or VERIFY only keeps itself on OLD (if none passes, the move halts after VERIFY).

hosts.migrate.yml is what makes a rerun after REWRITE complete it: the inventory then no longer names
OLD for those Pis. It goes when LEAVE is done.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from enum import Enum
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


class Step(Enum):
    PROVISION = "NEW and the Pis provisioned: both paths up"
    VERIFY = "each Pi verified through NEW"
    REWRITE = "the state file, the ports file and the inventory say NEW for the verified Pis"
    RETIRE = "the moved Pis provisioned on NEW alone (OLD's instance retired on each)"
    LEAVE = "the moved Pis' keys and routes off OLD, or OLD's side torn down"
    DONE = "done"
    HALTED = "halted"
    REFUSED = "refused"


@dataclass(frozen=True)
class Move:
    """A move's state: what the laptop's files say (read again after every step), and what this run did.
    The hosts' own state is read by each step's operations: every step is a converge, safe to repeat."""

    moving: tuple[str, ...]  # the selected Pis the inventory has on OLD alone
    pending: tuple[str, ...]  # the Pis the state file names: NEW in the inventory, OLD not retired on them yet
    done: frozenset[Step] = frozenset()  # the steps this run applied
    verified: tuple[str, ...] = ()  # the Pis this run verified through NEW
    halted: bool = False  # a step failed on a host (it said why; the recap names it): a rerun goes on


def next_step(move: Move, started: bool) -> tuple[Step, str]:
    """What the move does next, and why."""
    if move.halted:
        return Step.HALTED, "a step failed on a host: a rerun goes on from here"
    if Step.LEAVE in move.done:
        return Step.DONE, ""
    if move.moving and Step.PROVISION not in move.done:
        return Step.PROVISION, f"{', '.join(move.moving)} on OLD alone"
    if Step.PROVISION in move.done and Step.VERIFY not in move.done:
        return Step.VERIFY, "both paths are up"
    # every Pi verified in this run is on OLD in the inventory: rewrite, also those the state file names already
    # (a run that died between writing the state file and the inventory)
    if Step.REWRITE not in move.done and move.verified:
        return Step.REWRITE, f"{', '.join(move.verified)} verified through NEW"
    if not move.pending:
        return Step.HALTED, "no Pi was verified through NEW"
    if Step.RETIRE not in move.done:
        return Step.RETIRE, f"{', '.join(move.pending)} say NEW in the inventory"
    return Step.LEAVE, "the moved Pis use NEW alone"


def after(move: Move, step: Step) -> Move:
    """The state a step leads to when it succeeds (every Pi verified, every host up)."""
    done = move.done | {step}
    if step is Step.VERIFY:
        return replace(move, done=done, verified=move.moving)
    if step is Step.REWRITE:
        return replace(move, done=done, pending=tuple(sorted({*move.pending, *move.verified})),
                       moving=tuple(p for p in move.moving if p not in move.verified))
    if step is Step.LEAVE:
        return replace(move, done=done, pending=())
    return replace(move, done=done)


class Migration(reconcile.Flow[Move, Step]):
    """The move of the selected Pis from OLD to NEW, driven by pitunnel/reconcile.py. The Pis moving in this
    run are seen, while both paths are up, through `wide`: the inventory with them on OLD and NEW."""

    whole, cap = "migrate", 8

    def __init__(self, play: Play, old: str, new: str, moving: list[PiSpec], *, keep_old: bool) -> None:
        super().__init__(play.reporter)
        self.play, self.old, self.new, self.keep_old = play, old, new, keep_old
        self.host, self.prefix = new, f"migrate to {new}"
        self.inventory = play.inventory
        self.wide, self.said = widened(play.inventory, moving, new)  # refused here, before any host
        self.done: frozenset[Step] = frozenset()
        self.verified: tuple[str, ...] = ()
        self.halted, self.left = False, ""

    def read(self) -> Move:
        inv = load_inventory(self.inventory.path)
        state = read_state(inv.path)
        moving = tuple(p.name for p in self.play.selected(inv.pis.values()) if p.all_vps == (self.old,))
        return Move(moving, tuple(state[2]) if state else (), self.done, self.verified, self.halted)

    def next_step(self, state: Move, started: bool) -> tuple[Step, str]:
        return next_step(state, started)

    def after(self, state: Move, step: Step) -> Move:
        return after(state, step)

    def planned(self, state: Move, step: Step, why: str) -> bool:
        """Check mode: the Pis' and NEW's own changes for both paths (provision's check), then the rest in words."""
        play, old, new = self.play, self.old, self.new
        if step is Step.PROVISION:
            with play.narrowed(inventory=self.wide):
                site.provision(play)
            return True
        if step is Step.VERIFY:
            play.reporter.note(new, f"then: each Pi verified through {new}, the inventory rewritten to `vps: {new}`, "
                                    f"and {old} left (its side torn down unless Pis stay on it or --keep-old)")
        if state.pending:
            play.reporter.note(new, f"then: {', '.join(state.pending)} provisioned on {new} alone, and {old} left")
        return False

    def apply(self, step: Step, state: Move) -> None:
        """Each step reports itself, host by host; a host that fails halts the move after the step."""
        {Step.PROVISION: self.provision, Step.VERIFY: self.verify, Step.REWRITE: self.rewrite,
         Step.RETIRE: self.retire, Step.LEAVE: self.leave}[step](state)
        self.done |= {step}

    def finished(self, state: Move) -> tuple[str, str]:
        return f"migrate to {self.new} done", self.left

    def provision(self, state: Move) -> None:
        with self.play.narrowed(inventory=self.wide):
            site.provision(self.play)

    def verify(self, state: Move) -> None:
        """Each moving Pi through NEW; one that fails stays on OLD (both paths up), and the run fails for it."""
        play, old, new = self.play, self.old, self.new
        with play.narrowed(inventory=self.wide):
            reports = {r.pi: r for r in verify(play) if r.vps == new}
        verified = []
        for name in state.moving:
            report = reports.get(name)
            if report is not None and report.passed:
                play.reporter.line(name, "ok", f"migrate: verified through {new}", f"every check of {name} via {new}")
                verified.append(name)
            else:
                why = "; ".join(f"{c.name}: {c.detail}" for c in (report.checks if report else []) if not c.passed)
                play.reporter.line(name, "failed", f"migrate: verified through {new}",
                                   f"{why or 'not verified'}: it stays on {old} (both paths up); fix it and rerun")
                play.failed.add(name)
        self.verified = tuple(verified)

    def rewrite(self, state: Move) -> None:
        """The state file first (what is left to do), the ports file, then the inventory (kept as .bak)."""
        play, inv, new = self.play, self.inventory, self.new
        write_state(inv.path, self.old, new, sorted({*state.pending, *state.verified}))
        ports_follow(inv, self.wide, list(state.verified), self.old, new)
        try:
            changed = set_pi_vps(inv.path, list(state.verified), new)
        except CannotRewrite as exc:
            raise MigrateRefused(str(exc)) from None
        play.reporter.line(new, "changed" if changed else "ok", "inventory says the new VPS",
                           f"{inv.path}: vps: {new} for {', '.join(state.verified)} (as it was: {inv.path.name}.bak)")

    def retire(self, state: Move) -> None:
        """The moved Pis provisioned from the rewritten inventory: OLD's instance goes on each."""
        play = self.play
        inv = load_inventory(self.inventory.path)
        with play.narrowed(inventory=inv, limit=frozenset({*self.moved(inv, state), self.new})):
            site.provision_pi(play)
        self.halted = any(p in play.failed for p in self.moved(inv, state))

    def leave(self, state: Move) -> None:
        """The moved Pis' keys off OLD (its Nginx then serves the Pis left on it), or OLD's side torn down."""
        play, old = self.play, self.old
        inv = load_inventory(self.inventory.path)
        moved = self.moved(inv, state)
        left = [p.name for p in inv.pis.values() if old in p.all_vps]

        def leave(remote: Remote) -> None:
            if left or self.keep_old:
                vps.unauthorise(remote, inv, inv.vps[old], frozenset(moved), play.reporter, play.options.mode)
            else:
                converge(remote, vps.teardown_ops(inv.vps[old], purge=True), play.reporter, play.options.mode,
                         vps.handlers(remote))

        with play.narrowed(inventory=inv, limit=frozenset({old})):
            play.each([inv.vps[old]], leave)
            if (left or self.keep_old) and old not in play.failed:
                site.provision_vps(play)  # its Nginx serves the Pis left on it only
        if old in play.failed:
            self.halted = True  # named in the recap; a rerun completes it
            return
        state_file(inv.path).unlink(missing_ok=True)
        self.left = (f"{', '.join(moved)} through {self.new} only; {old}: "
                     + ("kept (--keep-old)" if self.keep_old else f"still serves {', '.join(left)}" if left
                        else "pitunnel's side torn down"))

    def moved(self, inv: Inventory, state: Move) -> list[str]:
        """The Pis the state file names that the inventory has on NEW alone."""
        return [p for p in state.pending if p in inv.pis and inv.pis[p].all_vps == (self.new,)]


def migrate(play: Play, new: str, *, keep_old: bool) -> None:
    """`invoke migrate --to NEW`: refused before any host if the move cannot start as asked."""
    inv, reporter = play.inventory, play.reporter
    if new not in inv.vps:
        raise MigrateRefused(f"--to {new}: no VPS of that name in {inv.path} (VPSes: {', '.join(inv.vps)}): "
                             "define it under vps: first")
    state = read_state(inv.path)
    if state is not None and state[1] != new:
        raise MigrateRefused(f"a move to {state[1]} is unfinished ({state_file(inv.path)}): "
                             f"rerun `invoke migrate --to {state[1]}` first")
    moving = [p for p in play.selected(inv.pis.values()) if len(p.all_vps) == 1 and p.first_vps != new]
    olds = {p.first_vps for p in moving} | ({state[0]} if state else set())
    if len(olds) > 1:
        raise MigrateRefused(f"the Pis selected are on several VPSes ({', '.join(sorted(olds))}): move one VPS's "
                             "Pis at a time (--limit)")
    if not olds:
        reporter.note(new, f"migrate: no Pi to move (every selected Pi is on {new}, or on several VPSes)")
        return
    flow = Migration(play, olds.pop(), new, moving, keep_old=keep_old)
    for line in flow.said:
        reporter.note(new, line)
    # the VPSes' steps run with the Pis', whatever --limit selected
    with play.narrowed(limit=play.options.limit | {flow.old, new} if play.options.limit else frozenset()):
        reconcile.reconcile(flow, check=play.options.check, applied=reconcile.Applied())
