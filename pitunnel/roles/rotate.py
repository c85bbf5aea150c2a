"""`invoke rotate-keys`: each Pi's tunnel key replaced by a new one, with the tunnel working throughout.

The order crosses hosts (the Pi makes and switches keys, the VPS accepts them, sshd's log proves which
one the tunnel uses), so it lives here in the site layer; the Pi's and the VPS's own parts are in
roles/pi/keys.py and roles/vps/keys.py. The rotation is a state machine (driven by pitunnel/reconcile.py)
whose state is read from the hosts every time, never from a journal on the laptop:

    the Pi's keys (in use, next, old)  x  the keys its VPSes accept for it  x  the key of each live session

    MAKE        a new key on the Pi, beside the one in use               (Pi: key.next)
    AUTHORISE   every VPS accepts it too, with the same restrictions     (each VPS: two lines for the Pi)
    SWITCH      the Pi's config path holds the new key, the old is kept  (Pi: key, key.old)
    CONNECT     the tunnels reconnect; done when each VPS's log shows every listener held by a session
                that logged in with the new key                          (one reconnect window per VPS)
    RETIRE_VPS  every VPS accepts the new key only
    RETIRE_PI   the old key gone from the Pi

A Pi with several VPSes has one tunnel key for all of them: the new key is switched to only once every
VPS accepts it, and the old one retired only once every VPS's listeners are held by the new key.
At every state the key the Pi's config names is accepted by every VPS, and so is the one each live
session logged in with: killed anywhere, the tunnel stays up (and comes back up if it drops), and a
rerun reads where it stopped and finishes. A rerun that finds nothing half-done starts a new rotation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from pitunnel import reconcile
from pitunnel.inventory import PiSpec, VpsSpec
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.runner import StepFailed, converge, facts_for
from pitunnel.sshkeys import PublicKey, parse_public_key
from pitunnel.roles.contract import listens
from pitunnel.roles.pi import keys as pi_keys
from pitunnel.roles.pi.locations import unit
from pitunnel.roles.pi.role import PI_DEFAULTS
from pitunnel.roles.vps import keys as vps_keys
from pitunnel.roles.vps.authorized import keys_ops, keys_path, refuse_shared, shared_keys

NEW = "(new key)"


class Step(Enum):
    MAKE = "make a new key on the Pi"
    AUTHORISE = "authorise it on the VPS next to the key in use"
    SWITCH = "switch the tunnel's key to it (the old one kept)"
    CONNECT = "reconnect the tunnel with it, proven by the VPS's log"
    RETIRE_VPS = "remove the old key from the VPS"
    RETIRE_PI = "remove the old key from the Pi"
    DONE = "done"
    REFUSED = "refused"


@dataclass(frozen=True)
class Ring:
    """A Pi's rotation as its hosts tell it, in fingerprints: the Pi's keys (None: not there), the keys
    its VPSes accept for it (any of them), and per listener on each VPS the key of the session holding it
    ("" nobody, "?" unknown). `everywhere`: with several VPSes, the keys every one of them accepts."""

    current: str | None
    next: str | None
    old: str | None
    authorised: tuple[str, ...]
    live: tuple[str, ...]
    everywhere: tuple[str, ...] | None = None

    @property
    def accepted(self) -> tuple[str, ...]:
        """The keys the Pi may log in with to every one of its VPSes."""
        return self.authorised if self.everywhere is None else self.everywhere

    @property
    def up_with(self) -> str | None:
        """The key every listener's session logged in with, if they all did with the same known one."""
        keys = set(self.live)
        return keys.pop() if len(keys) == 1 and not keys & {"", "?"} else None

    @property
    def in_progress(self) -> bool:
        return self.next is not None or self.old is not None


def next_step(ring: Ring, *, started: bool) -> tuple[Step, str]:
    """What to do next, and why (for REFUSED: what to do instead). `started`: this run has already
    made a key or found a rotation under way (a finished one is then not followed by another)."""
    if ring.current is None:
        return Step.REFUSED, "the Pi has no tunnel key: run `invoke provision-pi` first"
    if ring.next is not None:
        if ring.next not in ring.accepted:
            return Step.AUTHORISE, "the new key is not accepted by the VPS yet"
        return Step.SWITCH, "the VPS accepts both keys"
    if ring.old is not None:
        if ring.current not in ring.accepted:
            return Step.AUTHORISE, "the key in use is not accepted by the VPS"
        if ring.up_with != ring.current:
            return Step.CONNECT, f"the tunnel's session uses {_shown(ring.live)}, not the new key"
        if ring.authorised != (ring.current,):
            return Step.RETIRE_VPS, "the tunnel is up with the new key"
        return Step.RETIRE_PI, "the VPS accepts the new key only"
    stale = [k for k in ring.authorised if k != ring.current]
    if stale and ring.up_with == ring.current:
        return Step.RETIRE_VPS, f"the VPS still accepts {len(stale)} other key(s) of this Pi"
    if started:
        return Step.DONE, ""
    if ring.current not in ring.accepted:
        return Step.REFUSED, "the VPS does not accept the Pi's key: run `invoke provision-pi` first"
    if ring.up_with != ring.current:
        return Step.REFUSED, (f"the tunnel is not up with its key ({_shown(ring.live)}): a rotation starts only from "
                              "a working tunnel (see `invoke status`)")
    return Step.MAKE, "no rotation under way"


def after(ring: Ring, step: Step) -> Ring:
    """The state a step leads to when it succeeds (check mode shows the whole way with it)."""
    if step is Step.MAKE:
        return replace(ring, next=NEW)
    if step is Step.AUTHORISE:
        key = ring.next or ring.current or NEW
        return replace(ring, authorised=tuple(dict.fromkeys((*ring.authorised, key))),
                       everywhere=None if ring.everywhere is None else (*ring.everywhere, key))
    if step is Step.SWITCH:
        return replace(ring, current=ring.next, next=None, old=ring.old or ring.current)
    if step is Step.CONNECT:
        return replace(ring, live=tuple(ring.current or "" for _ in ring.live))
    if step is Step.RETIRE_VPS:
        only = (ring.current or NEW,)
        return replace(ring, authorised=only, everywhere=None if ring.everywhere is None else only)
    if step is Step.RETIRE_PI:
        return replace(ring, old=None)
    return ring


def plan(ring: Ring, *, started: bool = False, limit: int = 10) -> list[tuple[Step, str]]:
    """Every step from `ring` to DONE (or to a refusal), as check mode prints it."""
    return reconcile.plan(ring, lambda r, s: next_step(r, started=s), after, started=started, limit=limit)


def _shown(live: tuple[str, ...]) -> str:
    return ", ".join(sorted({k or "nobody listening" for k in live})) or "no listeners"


# ------------------------------------------------------------------------------------------ on the hosts
@dataclass(frozen=True)
class Read:
    """One reading of the Pi and each of its VPSes: the Ring, and the key lines behind its fingerprints
    (the lines each VPS accepts for the Pi, by VPS name)."""

    ring: Ring
    pi: pi_keys.PiKeys
    authorised: dict[str, tuple[str, ...]]


def _fp(key: PublicKey | None) -> str | None:
    return key.fingerprint if key is not None else None


def read(pi_remote: Remote, vps_remotes: Mapping[str, Remote], pi: PiSpec, vpses: Sequence[VpsSpec]) -> Read:
    on_pi = pi_keys.read_keys(pi_remote, pi)
    lines: dict[str, tuple[str, ...]] = {}
    accepted: list[list[str]] = []
    live: list[str] = []
    for vps_spec in vpses:
        specs = listens(pi.path(vps_spec.name))
        on_vps = vps_keys.read_keys(vps_remotes[vps_spec.name], vps_spec, pi.name, specs)
        lines[vps_spec.name] = on_vps.authorised
        accepted.append([parse_public_key(k).fingerprint for k in on_vps.authorised])
        live += [on_vps.live.get(s, "") for s in specs]
    anywhere = tuple(dict.fromkeys(k for keys in accepted for k in keys))
    everywhere = tuple(k for k in anywhere if all(k in keys for keys in accepted)) if len(accepted) > 1 else None
    ring = Ring(_fp(on_pi.current), _fp(on_pi.next), _fp(on_pi.old), anywhere, tuple(live), everywhere)
    return Read(ring, on_pi, lines)


class PiRotation(reconcile.Flow[Read, Step]):
    """One Pi's rotation (edits of one VPS's authorized_keys one at a time over the Pis, each reading the
    file afresh: `locks`)."""

    prefix, whole = "tunnel key", "tunnel key rotation"
    resumed = "a rotation of the tunnel key is under way (an earlier run stopped): finishing it"

    def __init__(self, play: Play, remote: Remote, locks: Mapping[str, threading.Lock]) -> None:
        super().__init__(play.reporter)
        self.play, self.remote, self.locks = play, remote, locks
        self.inv = play.inventory
        self.pi = self.inv.pis[remote.name]
        self.host = self.pi.name

    def read(self) -> Read:
        return read(self.remote, self.play.remotes, self.pi, self.inv.vpses_of(self.pi))

    def next_step(self, state: Read, started: bool) -> tuple[Step, str]:
        return next_step(state.ring, started=started)

    def after(self, state: Read, step: Step) -> Read:
        return replace(state, ring=after(state.ring, step))

    def under_way(self, state: Read) -> bool:
        return state.ring.in_progress

    def finished(self, state: Read) -> tuple[str, str]:
        return "tunnel key rotated", f"in use: {state.ring.current}; the VPS accepts it alone; no other key on the Pi"

    def apply(self, step: Step, state: Read) -> str:
        ring, on_pi, remote, pi = state.ring, state.pi, self.remote, self.pi
        if step is Step.MAKE:
            self._run(pi_keys.make_next(pi), step)
            made = pi_keys.read_keys(remote, pi).next
            return f"{made.fingerprint if made else '?'} (its private half never leaves the Pi)"
        if step is Step.AUTHORISE:
            wanted = on_pi.next or on_pi.current
            assert wanted is not None
            lacking = [v for v, lines in state.authorised.items() if wanted.line not in lines]
            for vps in lacking:
                self._authorise(vps, [*state.authorised[vps], wanted.line])
            where = f" on {', '.join(lacking)}" if len(state.authorised) > 1 else ""
            return (f"{wanted.fingerprint}{where}, with the same restrictions, beside "
                    f"{', '.join(ring.authorised) or 'none'}")
        if step is Step.SWITCH:
            self._run(pi_keys.switch(pi), step)
            return f"{ring.next} at {pi_keys.key_path(pi)}; {ring.current} kept as .old until the VPS drops it"
        if step is Step.CONNECT:
            return self._connect(ring)
        if step is Step.RETIRE_VPS:
            assert on_pi.current is not None
            for vps, lines in state.authorised.items():
                if lines != (on_pi.current.line,):
                    self._authorise(vps, [on_pi.current.line])
            gone = [k for k in ring.authorised if k != ring.current]
            return f"{', '.join(gone)} no longer accepted"
        if step is Step.RETIRE_PI:
            self._run(pi_keys.drop_old(pi), step)
            return f"{ring.old} deleted"
        raise AssertionError(step)

    def _run(self, script: str, step: Step) -> None:
        reconcile.run_script(self.remote, script, self.reporter, f"tunnel key: {step.value}")

    def _authorise(self, vps: str, lines: list[str]) -> None:
        pi, vps_spec, remote = self.pi, self.inv.vps[vps], self.play.remotes[vps]
        ops = keys_ops(self.inv, vps_spec, {pi.name: lines})
        with self.locks[vps]:  # read and write of the shared file together, one Pi at a time
            known = facts_for(remote, ops)
            # a key of this Pi's (its next one too) that another Pi holds: refused, nothing written
            shared = shared_keys(self.inv, vps_spec, {pi.name: lines}, known.file(keys_path()))
            if shared:
                if pi.name not in refuse_shared(self.reporter, vps, shared):
                    self.reporter.line(pi.name, "failed", f"tunnel key: {Step.AUTHORISE.value}",
                                       f"nothing written on {vps}: it lists a key for two Pis (see above)")
                raise StepFailed("a key two Pis hold")
            converge(remote, ops, self.reporter, self.play.options.mode, known=known)

    def _connect(self, ring: Ring) -> str:
        """Reconnect if a session of another key holds a listener (or wait while the tunnels come back on
        their own), until each VPS's log shows every listener held by a session of the key in use."""
        pi = self.pi
        started = time.monotonic()
        restarted = False
        for attempt in range(2):
            if attempt or any(k not in ("", ring.current) for k in ring.live):
                self._run(pi_keys.reconnect(pi), Step.CONNECT)
                restarted = True
            deadline = time.monotonic() + PI_DEFAULTS["listen_wait_seconds"]
            while time.monotonic() < deadline:
                ring = self.read().ring
                if ring.up_with == ring.current:
                    how = "reconnected" if restarted else "came back by itself"
                    held = "; ".join(f"{p.vps}: {', '.join(s.spec for s in listens(p))}" for p in pi.paths()) \
                        if len(pi.all_vps) > 1 else ", ".join(s.spec for s in listens(pi.first_path))
                    return (f"{how}: every listener ({held}) held by a session that logged in with "
                            f"{ring.current} (sshd's log), {time.monotonic() - started:.1f}s")
                time.sleep(0.3)
        why = f"not up with {ring.current} after {time.monotonic() - started:.0f}s ({_shown(ring.live)})"
        raise reconcile.failed(self.reporter, pi.name, f"tunnel key: {Step.CONNECT.value}",
                               f"{why}; the VPS still accepts the old key: rerun, and see "
                               f"`journalctl {' '.join(f'-u {unit(v)}' for v in pi.all_vps)}`")


def rotate_keys(play: Play) -> None:
    """`invoke rotate-keys`: every selected Pi's tunnel key, one state machine per Pi, in parallel."""
    locks = {name: threading.Lock() for name in play.inventory.vps}
    applied = reconcile.Applied()
    play.each_selected(play.inventory.pis.values(),
                       lambda remote: reconcile.reconcile(PiRotation(play, remote, locks), check=play.options.check,
                                                          applied=applied))
