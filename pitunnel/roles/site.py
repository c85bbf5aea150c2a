"""The whole site: the order across hosts, and what crosses between them (roles/contract.py) as values.

Each role describes its own host only; this module runs them in order and carries what one host needs
from another: the Pis' offers (keys, listeners) to their VPS, the VPS's host keys and listeners back to
its Pis. provision-pi, provision, verify, status and teardown all start here.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from pitunnel.inventory import Inventory, PiSpec, VpsSpec
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.runner import StepFailed, stop_point
from pitunnel.shared import SharedReading
from pitunnel.roles.contract import VpsFacts, listen_spec
from pitunnel.roles.pi import status as pi_status
from pitunnel.roles.pi import steps as pi
from pitunnel.roles.pi import verify as pi_verify
from pitunnel.roles.vps import steps as vps


def vpses_of(inv: Inventory, pis: list[PiSpec]) -> list[VpsSpec]:
    return list({inv.vps_of(p).name: inv.vps_of(p) for p in pis}.values())


def provision(play: Play) -> None:
    """`invoke provision`: the Pis' base step (autossh, tunnel account, key made on the Pi) needs nothing
    from the VPS, so it runs while the VPS converges; the Pis' keys and tunnels follow once it is done."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        based = pool.submit(pi.base, play)
        # a VPS where a name's certificate could not be obtained serves everything else: its Pis go on,
        # and it counts as failed at the end
        partial = vps.provision_routes(play)
        bases = based.result()
    connect(play, bases)
    play.failed |= partial


def provision_pi(play: Play) -> None:
    """`invoke provision-pi`: base on every Pi, the Pis' keys on their VPS, then each Pi's tunnel."""
    connect(play, pi.base(play))


def connect(play: Play, bases: dict[str, pi.PiBase]) -> None:
    """The Pis' keys on their VPS (which tells them its host keys and listeners), then each Pi's tunnel,
    up and listening on the VPS, then its passwords off where the inventory says so."""
    inv, mode, reporter = play.inventory, play.options.mode, play.reporter
    pis = play.selected(list(inv.pis.values()))

    def authorise(remote: Remote) -> VpsFacts:
        offers = [bases[p.name].offer for p in pis if p.vps == remote.name and p.name in bases]
        return vps.authorise(remote, inv, inv.vps[remote.name], offers, reporter, mode)

    found = play.each(vpses_of(inv, pis), authorise)
    # the Pis wait for their listeners on one VPS connection: they share its `ss` readings
    readings = {v.name: SharedReading(partial(vps.listeners, play.remotes[v.name])) for v in vpses_of(inv, pis)}

    def tunnel(remote: Remote) -> None:
        spec = inv.pis[remote.name]
        facts = found.get(spec.vps)
        if facts is None:
            reporter.line(spec.name, "skipped", "tunnel", f"its VPS {spec.vps} step failed")
            return
        changed = pi.tunnel(play, remote, bases[spec.name], facts.host_keys)
        if not mode.check:
            wait_listening(play, spec, readings[spec.vps], None if changed else facts.listeners)
        if spec.disable_password_login:
            pi.passwords_off(play, remote)

    play.each([p for p in pis if p.name in bases and (bases[p.name].offer.pubkey is not None or mode.check)], tunnel)


def wait_listening(play: Play, spec: PiSpec, readings: SharedReading[frozenset[str]],
                   now: frozenset[str] | None) -> None:
    """The run is done only when the VPS really listens on every forward of this Pi."""
    wanted = [listen_spec(t) for t in spec.tunnels]
    missing = [w for w in wanted if w not in (now or frozenset())]
    started = looked = time.monotonic()
    deadline = started + pi.D["listen_wait_seconds"]
    with play.reporter.busy(spec.name, "tunnel listening on the VPS"):
        while missing and time.monotonic() < deadline:
            stop_point()  # Ctrl-C: the tunnel is in place; only the wait for it is cut short
            time.sleep(0.5)
            # any reading that began since this Pi last looked will do: one ss serves every Pi waiting
            reading, looked = readings.newer_than(looked), time.monotonic()
            missing = [w for w in wanted if w not in reading]
    if missing:
        play.reporter.line(spec.name, "failed", "tunnel listening on the VPS",
                           f"not listening after {pi.D['listen_wait_seconds']}s: {', '.join(missing)} "
                           f"(see `journalctl -u {pi.D['unit']}` on the Pi)")
        raise StepFailed("not listening")
    waited = time.monotonic() - started
    play.reporter.line(spec.name, "ok", "tunnel listening on the VPS",
                       f"{', '.join(wanted)}" + (f" (after {waited:.1f}s)" if waited > 0.1 else ""))


def verify(play: Play) -> list[pi_verify.PiReport]:
    """`invoke verify`: each VPS's listeners, then each Pi proven through its VPS."""
    inv = play.inventory
    pis = play.selected(list(inv.pis.values()))
    reports = {p.name: pi_verify.PiReport(p.name) for p in pis}
    found = play.each(vpses_of(inv, pis), vps.listeners)
    def prove(remote: Remote) -> None:
        with play.reporter.busy(remote.name, "verify: probes through the VPS"):
            pi_verify.verify_pi(play, remote, reports[remote.name], found.get(inv.pis[remote.name].vps, frozenset()))

    play.each(pis, prove)
    return list(reports.values())


def status(play: Play) -> list[pi_status.TunnelStatus]:
    """`invoke status`: each VPS's listeners and certificates, then each Pi's tunnels."""
    inv = play.inventory
    pis = play.selected(list(inv.pis.values()))
    found = play.each(vpses_of(inv, pis), lambda remote: vps.listeners_and_certificates(remote, inv.vps[remote.name]))
    rows = play.each(pis, lambda remote: pi_status.status_pi(remote, inv.pis[remote.name],
                                                             found[inv.pis[remote.name].vps][0]
                                                             if inv.pis[remote.name].vps in found else frozenset()))
    for p in pis:  # a Pi out of reach: its tunnels as its VPS sees them
        if p.name not in rows and p.name in play.why:
            rows[p.name] = pi_status.unreached(p, found[p.vps][0] if p.vps in found else None, play.why[p.name])
    for pi_rows in rows.values():
        for row in pi_rows:
            spec = inv.pis[row.pi]
            tunnel = next(t for t in spec.tunnels if t.name == row.tunnel)
            if tunnel.kind == "http" and spec.vps in found:
                row.certificate = vps.certificate_expiry(inv.vps_of(spec), tunnel, found[spec.vps][1])
    return sorted((r for p in pis for r in rows.get(p.name, [])), key=lambda r: (r.pi, r.tunnel))


def teardown(play: Play, *, purge: bool) -> None:
    """`invoke teardown`: the Pis first, and their keys off their VPS (unless that VPS goes too), then the VPS."""
    inv = play.inventory
    pi.teardown(play, purge=purge)
    if play.options.limit:
        pis = play.selected(list(inv.pis.values()))
        # a Pi refused because the laptop reaches it only through its own tunnel keeps its key on the VPS
        gone = frozenset(p.name for p in pis if not (p.name in play.failed and play.remotes[p.name].through_tunnel))

        def unauthorise(remote: Remote) -> None:
            if remote.name in play.options.limit:
                return  # the VPS's own teardown removes the whole account
            vps.unauthorise(remote, inv, inv.vps[remote.name], gone, play.reporter, play.options.mode)

        play.each(vpses_of(inv, pis), unauthorise)
    vps.teardown(play, purge=purge)
