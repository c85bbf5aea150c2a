"""The whole site: the order across hosts, and what crosses between them (roles/contract.py) as values.

Each role describes its own host only; this module runs them in order and carries what one host needs
from another: the Pis' offers (keys, listeners) to their VPSes, each VPS's host keys and listeners back to
its Pis. A Pi may have several VPSes: a tunnel to each is a path, and one VPS that does not answer never
holds up the paths through the others. provision-vps, provision-pi, provision and teardown start here;
verify and status read across hosts too, as the site's probes (roles/probes/).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from functools import partial

from pitunnel.inventory import Inventory, PiPath, PiSpec, VpsSpec
from pitunnel.inventory.revoked import records, revoked_file, revoked_key, write_revoked
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.runner import StepFailed, stop_point
from pitunnel.shared import SharedReading
from pitunnel.roles.contract import VpsFacts, listen_spec, offer_on
from pitunnel.roles.pi import bootstrap
from pitunnel.roles.pi import locations as pi_locations
from pitunnel.roles.pi import steps as pi
from pitunnel.roles.pi.role import PI_DEFAULTS
from pitunnel.roles.vps import steps as vps


def missing_path(spec: PiSpec, vps_name: str) -> str:
    return (f"path {spec.name} via {vps_name} is missing: VPS {vps_name} did not answer; the other paths are up. "
            f"Rerun provision (or provision-pi) once {vps_name} is back to complete it")


def provision(play: Play) -> None:
    """`invoke provision`: the Pis' base step (autossh, tunnel account, key made on the Pi) needs nothing
    from the VPS, so it runs while the VPS converges; the Pis' keys and tunnels follow once it is done."""
    play.connect_ahead()
    with ThreadPoolExecutor(max_workers=1) as pool:
        based = pool.submit(pi.base, play)
        # a VPS where a name's certificate could not be obtained serves everything else: its Pis go on,
        # and it counts as failed at the end
        partial = vps.converge_selected(play)
        bases = based.result()
    connect(play, bases)
    play.failed |= partial


def provision_vps(play: Play) -> None:
    """`invoke provision-vps`: converge every selected VPS (a VPS that serves all but a name's certificate
    counts as failed at the end)."""
    play.failed |= vps.converge_selected(play)


def provision_pi(play: Play) -> None:
    """`invoke provision-pi`: base on every Pi, the Pis' keys on their VPS, then each Pi's tunnel."""
    play.connect_ahead()
    connect(play, pi.base(play))


def connect(play: Play, bases: dict[str, pi.PiBase]) -> None:
    """The Pis' keys on each of their VPSes (which tells them its host keys and listeners), then each Pi's
    tunnels to the VPSes that answered, up and listening there, then its passwords off where the inventory
    says so. A path whose VPS did not answer is left as it is on the Pi, and named under the recap."""
    inv, mode, reporter = play.inventory, play.options.mode, play.reporter
    pis = play.selected(inv.pis.values())
    bases = {name: base for name, base in bases.items() if not offers_revoked_key(play, name, base)}

    def authorise(remote: Remote) -> VpsFacts:
        offers = [offer_on(bases[p.name].offer, p.path(remote.name)) for p in pis
                  if remote.name in p.all_vps and p.name in bases]
        return vps.authorise(remote, inv, inv.vps[remote.name], offers, reporter, mode)

    found = play.each(inv.vpses_of_pis(pis), authorise)
    # the Pis wait for their listeners on one connection per VPS: they share its `ss` readings
    readings = {name: SharedReading(partial(vps.listeners, play.remotes[name])) for name in found}

    def tunnel(remote: Remote) -> None:
        spec = inv.pis[remote.name]
        # a VPS that refused this Pi's key (another Pi's) said so: its tunnel there is left as it is
        answered = {v: found[v].host_keys for v in spec.all_vps if v in found and spec.name not in found[v].refused}
        for v in spec.all_vps:
            if v not in found:
                reporter.line(spec.name, "skipped", f"tunnel via {v}", f"its VPS {v} step failed")
        if not answered:
            return
        done = pi.tunnel(play, remote, bases[spec.name], answered)
        if not mode.check:
            for v in answered:  # every instance started at once: these waits overlap
                wait_listening(play, spec.path(v), readings[v], None if v in done.changed else found[v].listeners)
        if any(spec.name in found[v].bootstrapped for v in answered):  # enrolled: its own tunnel is up now
            if set(spec.all_vps) <= set(answered):
                bootstrap.retire(play, remote)
                retired.add(spec.name)
            else:
                reporter.warn(spec.name, "its bootstrap tunnel stays until every one of its VPSes has its own key: "
                                         "rerun provision-pi once they answer")
        if spec.disable_password_login:
            pi.passwords_off(play, remote, done.facts)
        for v in spec.all_vps:
            if v not in found and len(spec.all_vps) > 1:
                reporter.warn(spec.name, missing_path(spec, v))

    retired: set[str] = set()
    done = play.each([p for p in pis if p.name in bases and (bases[p.name].offer.pubkey is not None or mode.check)],
                     tunnel)
    gone = {p.name: None for p in pis if p.name in retired and p.name in done}
    if gone:  # their bootstrap keys off their VPSes, each key's sessions ended with it
        cleared = play.each(inv.vpses_of_pis([inv.pis[n] for n in gone]), lambda remote: vps.unauthorise_bootstrap(
            remote, inv, inv.vps[remote.name], gone, reporter, mode))
        if not mode.check:
            own_listening(play, [inv.pis[n] for n in gone], cleared)
    back = [p for p in pis if p.name in inv.revoked and p.name in done and set(p.all_vps) <= set(found)]
    for p in back:  # provisioned again, with a new key, through every VPS: no longer revoked
        reporter.line(p.name, "would change" if mode.check else "changed", "revoked state ended",
                      f"its new key is authorised (its old ones stay refused, in {revoked_file(inv.path).name}): "
                      f"run provision-vps for its routes")
    if back and not mode.check:  # its old keys stay refused: the record stays, ended
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        write_revoked(revoked_file(inv.path), {**records(inv), **{p.name: replace(inv.revoked[p.name], ended=now)
                                                                   for p in back}})


def offers_revoked_key(play: Play, name: str, base: pi.PiBase) -> bool:
    """Does this Pi offer a revoked key (it was not re-imaged, or its key not made new)? Then it fails alone,
    and the key goes to no VPS."""
    key = base.offer.pubkey
    if key is None or not revoked_key(play.inventory, key):
        return False
    play.reporter.line(name, "failed", "tunnel key not revoked",
                       f"it offers the key revoked by `pitunnel revoke` "
                       f"({key.fingerprint}), which is never authorised again. Fix: "
                       f"re-image {name} (recommended), or on it: sudo rm {pi_locations.key_path(play.inventory.pis[name])} "
                       f"{pi_locations.key_path(play.inventory.pis[name])}.pub; then provision-pi --limit {name}")
    play.failed.add(name)
    return True


OWN_LISTENING = "own tunnel listening on the VPS, bootstrap gone"  # the wait once an enrolled Pi's bootstrap went


def own_listening(play: Play, pis: Sequence[PiSpec], vpses: Iterable[str]) -> None:
    """The enrolled Pis whose bootstrap just went: until then its sessions held their listeners, so the wait
    before proved only the bootstrap's. Each Pi's own tunnel takes them over within its restart delay, on every
    VPS (`vpses`: those whose bootstrap sessions were ended); the run is done only when it has."""
    readings = {name: SharedReading(partial(vps.listeners, play.remotes[name])) for name in vpses}

    def wait(remote: Remote) -> None:
        spec = play.inventory.pis[remote.name]
        for v in spec.all_vps:
            if v in readings:
                wait_listening(play, spec.path(v), readings[v], None, step=OWN_LISTENING)

    play.each(pis, wait)


def wait_listening(play: Play, path: PiPath, readings: SharedReading[frozenset[str]],
                   now: frozenset[str] | None, *, step: str = "tunnel listening on the VPS") -> None:
    """The run is done only when the VPS really listens on every forward of this Pi (`path`: its path there)."""
    wanted = [listen_spec(t) for t in path.tunnels]
    missing = [w for w in wanted if w not in (now or frozenset())]
    started = looked = time.monotonic()
    deadline = started + PI_DEFAULTS["listen_wait_seconds"]
    with play.reporter.busy(path.name, step):
        while missing and time.monotonic() < deadline:
            stop_point()  # Ctrl-C: the tunnel is in place; only the wait for it is cut short
            time.sleep(0.5)
            # any reading that began since this Pi last looked will do: one ss serves every Pi waiting
            reading, looked = readings.newer_than(looked), time.monotonic()
            missing = [w for w in wanted if w not in reading]
    if missing:
        play.reporter.line(path.name, "failed", step,
                           f"{path.vps}: not listening after {PI_DEFAULTS['listen_wait_seconds']}s: {', '.join(missing)} "
                           f"(see `journalctl -u {pi_locations.unit(path.vps)}` on the Pi)")
        raise StepFailed("not listening")
    waited = time.monotonic() - started
    play.reporter.line(path.name, "ok", step,
                       f"{path.vps}: {', '.join(wanted)}" + (f" (after {waited:.1f}s)" if waited > 0.1 else ""))


def teardown(play: Play, *, purge: bool) -> None:
    """`invoke teardown`: the Pis first, and their keys off their VPS (unless that VPS goes too), then the VPS."""
    inv = play.inventory
    play.connect_ahead()
    pi.teardown(play, purge=purge)
    if play.options.limit:
        pis = play.selected(inv.pis.values())
        # a Pi refused because the laptop reaches it only through its own tunnel keeps its key on the VPS
        gone = frozenset(p.name for p in pis if not (p.name in play.failed and play.remotes[p.name].through_tunnel))

        def unauthorise(remote: Remote) -> None:
            if remote.name in play.options.limit:
                return  # the VPS's own teardown removes the whole account
            vps.unauthorise(remote, inv, inv.vps[remote.name], gone, play.reporter, play.options.mode)

        play.each(inv.vpses_of_pis(pis), unauthorise)
    vps.teardown(play, purge=purge)
