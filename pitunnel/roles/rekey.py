"""`invoke rotate-vps-hostkey`: the VPS's host keys replaced, planned, without a Pi ever refusing it.

A Pi's tunnel accepts only the host keys it pins, so the order crosses hosts and lives here: new keys
are made on the VPS and staged; every Pi of that VPS pins them beside the old ones (the laptop's
known_hosts too); only then does sshd switch to them (a reload keeps every session, the tunnels too),
proven by a fresh login from the laptop (else the old keys come back); then the old pins go. As with
rotate-keys, pitunnel/reconcile.py drives it and the state is read from the hosts each time (what is
staged, what sshd offers, what each Pi and the laptop pin), so an interrupted run is finished by the next.

    STAGE      new keys made on the VPS, beside the ones in use (nothing changes for anyone)
    PIN_BOTH   every Pi (and the laptop) accepts old and new      (no reconnect: pins are read at connect)
    SWITCH     sshd offers the new keys
    UNPIN_OLD  every Pi (and the laptop) accepts the new keys only
    CLEAN      the staged copies and the old private keys gone from the VPS
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from pitunnel import hostkeys, reconcile
from pitunnel.facts import file_fact, read
from pitunnel.inventory import VpsSpec
from pitunnel.play import Play
from pitunnel.runner import StepFailed, converge
from pitunnel.roles.pi import steps as pi
from pitunnel.roles.pi.locations import vps_config_dir
from pitunnel.roles.vps import keys as vps_keys
from pitunnel.roles.vps.role import VPS_DEFAULTS


class Step(Enum):
    STAGE = "make new host keys on the VPS (staged, not in use)"
    PIN_BOTH = "pin the new host keys beside the old ones on every Pi and in the laptop's known_hosts"
    SWITCH = "switch sshd to the new host keys (reload: sessions kept), proven by a fresh login"
    UNPIN_OLD = "unpin the old host keys on every Pi and in the laptop's known_hosts"
    CLEAN = "remove the staged copies and the old private keys from the VPS"
    DONE = "done"
    REFUSED = "refused"


@dataclass(frozen=True)
class Rekey:
    """The re-key as the hosts tell it: sshd's keys, the staged ones (None: none), each Pi's pins, and
    the keys the laptop's known_hosts lists for the VPS."""

    current: frozenset[str]
    staged: frozenset[str] | None
    pins: tuple[frozenset[str], ...]
    laptop: frozenset[str]


def next_step(state: Rekey, *, started: bool, pinned_in_inventory: bool = False) -> tuple[Step, str]:
    if state.staged is None:
        if started:
            return Step.DONE, ""
        if pinned_in_inventory:
            return Step.REFUSED, ("the inventory pins this VPS's host_key: pitunnel cannot change that file; remove "
                                  "host_key (known_hosts then checks the key), re-key, and pin the new key after")
        return Step.STAGE, "no re-key under way"
    if state.staged != state.current:
        if any(not state.staged <= p for p in state.pins) or not state.staged <= state.laptop:
            return Step.PIN_BOTH, "not every Pi (or the laptop) accepts the new keys yet"
        return Step.SWITCH, "every Pi and the laptop accept both"
    if any(p != state.current for p in state.pins) or state.laptop != state.current:
        return Step.UNPIN_OLD, "sshd offers the new keys"
    return Step.CLEAN, "the old keys are pinned nowhere"


def after(state: Rekey, step: Step) -> Rekey:
    """The state a step leads to when it succeeds (check mode shows the way with it)."""
    new = state.staged or frozenset({"(new keys)"})
    if step is Step.STAGE:
        return replace(state, staged=new)
    if step is Step.PIN_BOTH:
        return replace(state, pins=tuple(p | new for p in state.pins), laptop=state.laptop | new)
    if step is Step.SWITCH:
        return replace(state, current=new)
    if step is Step.UNPIN_OLD:
        return replace(state, pins=tuple(state.current for _ in state.pins), laptop=state.current)
    if step is Step.CLEAN:
        return replace(state, staged=None)
    return state


# ------------------------------------------------------------------------------------------ on the hosts
@dataclass(frozen=True)
class Reading:
    """One reading of the VPS and its Pis: the Rekey, and the VPS's host keys behind it."""

    rekey: Rekey
    found: vps_keys.HostKeys


class VpsRekey(reconcile.Flow[Reading, Step]):
    prefix, whole, cap = "host key", "host key: re-key", 8

    def __init__(self, play: Play, vps: VpsSpec) -> None:
        super().__init__(play.reporter)
        self.play, self.vps, self.host = play, vps, vps.name
        self.inv = play.inventory
        self.remote = play.remotes[vps.name]
        self.pis = [p for p in self.inv.pis.values() if vps.name in p.all_vps]
        self.name = hostkeys.known_name(vps.address, vps.port)
        self.known_hosts = self.inv.settings.known_hosts

    def read(self) -> Reading:
        found = vps_keys.read_host_keys(self.remote)
        pins_file = file_fact(f"{vps_config_dir(self.vps.name)}/known_hosts")
        pins = self.play.each(self.pis, lambda r: pi.pinned(read(r, pins_file).content.decode(errors="replace")))
        missing = [p.name for p in self.pis if p.name not in pins]
        if missing:
            raise self.fail("read the Pis' pins", f"{', '.join(missing)} not reached: every Pi of {self.vps.name} must "
                            "pin the new keys before sshd switches (nothing switched; rerun once they are reachable)")
        laptop = frozenset(" ".join(line.split()[1:3]) for line in hostkeys.known_lines(self.known_hosts, self.name))
        return Reading(Rekey(frozenset(found.current), None if found.staged is None else frozenset(found.staged),
                             tuple(frozenset(pins[p.name]) for p in self.pis), laptop), found)

    def fail(self, title: str, why: str) -> StepFailed:
        return reconcile.failed(self.reporter, self.host, f"host key: {title}", why)

    def next_step(self, state: Reading, started: bool) -> tuple[Step, str]:
        return next_step(state.rekey, started=started, pinned_in_inventory=bool(self.vps.host_key))

    def after(self, state: Reading, step: Step) -> Reading:
        return replace(state, rekey=after(state.rekey, step))

    def under_way(self, state: Reading) -> bool:
        return state.found.staged is not None

    def finished(self, state: Reading) -> tuple[str, str]:
        return "host keys re-keyed", f"{len(state.rekey.current)} keys, pinned by {len(self.pis)} Pi(s) and the laptop"

    def apply(self, step: Step, state: Reading) -> str:
        found = state.found
        staged = list(found.staged or ())
        if step is Step.STAGE:
            self.script(vps_keys.stage_host_keys(), step)
            return ""
        if step is Step.PIN_BOTH:
            self.pin([*found.current, *(k for k in staged if k not in found.current)], keep_laptop=True)
            return f"{len(staged)} new keys pinned beside {len(found.current)} old ones"
        if step is Step.SWITCH:
            self.script(vps_keys.install_host_keys(VPS_DEFAULTS["ssh_service"]), step)
            if not self.remote.can_log_in_fresh(use_password=False):
                self.remote.run(vps_keys.restore_host_keys(VPS_DEFAULTS["ssh_service"]))
                raise self.fail(step.value, "a fresh login failed after the switch: the old host keys are back")
            return "a fresh login from the laptop checked the new key"
        if step is Step.UNPIN_OLD:
            self.pin(list(found.current), keep_laptop=False)
            return f"the Pis and the laptop accept {len(found.current)} keys, all new"
        if step is Step.CLEAN:
            self.script(vps_keys.drop_staged(), step)
            return ""
        raise AssertionError(step)

    def script(self, text: str, step: Step) -> None:
        reconcile.run_script(self.remote, text, self.reporter, f"host key: {step.value}")

    def pin(self, keys: list[str], *, keep_laptop: bool) -> None:
        """Every Pi's pins to `keys` (no reconnect: ssh reads them at its next connect), then the laptop's."""
        done = self.play.each(self.pis, lambda r: converge(r, [pi.pins_file(self.vps, keys)], self.play.reporter,
                                                           self.play.options.mode))
        if len(done) != len(self.pis):
            raise self.fail("pin", "not every Pi took the pins (see above): rerun once they are reachable")
        wanted = set(keys)
        hostkeys.rewrite(self.known_hosts, self.name, keep=lambda k: keep_laptop or k in wanted, add=keys)


def rotate_vps_hostkey(play: Play) -> None:
    """`invoke rotate-vps-hostkey`: every selected VPS, one at a time (each with all its Pis)."""
    applied = reconcile.Applied()
    for vps in play.selected(play.inventory.vps.values()):
        flow = VpsRekey(play, vps)
        play.each([vps], lambda remote: reconcile.reconcile(flow, check=play.options.check, applied=applied))
