"""`invoke verify`: prove from the laptop that every Pi is reachable as intended, and no further.

Each VPS's listeners are read first; then every path (a Pi through one VPS) is proven: its unit, its
listeners, the user's ways in (SSH through the VPS, HTTP through Nginx), and every negative probe refused.
What the Pi is asked is read in one round trip, as typed facts."""

from __future__ import annotations

from pitunnel.facts import gather
from pitunnel.inventory import has_tls
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.roles.pi.locations import unit, watchdog_unit
from pitunnel.roles.pi.sshd import sshd_passwords_fact
from pitunnel.roles.probes.exposure import listener_checks, passwords_check, probe_checks, probes_fact
from pitunnel.roles.probes.http_route import NGINX_SILENT, http_through
from pitunnel.roles.probes.login import NO_CONNECTION, ssh_through
from pitunnel.roles.probes.reach import unreachable, vps_view
from pitunnel.roles.probes.report import REACH, PathReport
from pitunnel.roles.probes.unit import UnitState, unit_fact
from pitunnel.roles.vps.firewall import HostFirewall

PROBES_TIMEOUT = 120  # seconds: the probes take their time (each ssh up to 15 s)


def unit_checks(report: PathReport, state: UnitState, vps: str) -> None:
    tunnel_unit, watchdog = unit(vps), watchdog_unit(vps)
    report.add("unit enabled and active", state.state == "enabled, active", state.state,
               f"on the Pi: systemctl status {tunnel_unit}; journalctl -u {tunnel_unit}")
    report.add("watchdog active", state.watchdog == "active", state.watchdog,
               f"without it, a dead connection waits for keepalives after the network is back: on the Pi, "
               f"systemctl status {watchdog}; or rerun provision-pi")


def verify_pi(play: Play, remote: Remote, report: PathReport, present: frozenset[str] | None,
              firewall: HostFirewall | None = None) -> None:
    """Prove one path, into its `report`: the Pi's unit for that VPS, the VPS's listeners (`present`, read
    by `verify`; None if the VPS did not answer), SSH and HTTP through that VPS (the VPS's connection
    carries the jumps), and every probe refused. A public port the laptop cannot reach is told apart (`firewall`:
    the VPS's host firewall): nothing listens, the host firewall blocks it, or a firewall outside the VPS does."""
    inv = play.inventory
    pi = inv.pis[remote.name]
    path = pi.path(report.vps or pi.first_vps)
    report.vps = path.vps
    vps = inv.vps_of(path)
    if present is None:
        why = play.why.get(vps.name) or f"{vps.name} ({vps.address}) did not answer"
        report.add(f"{REACH}the VPS {vps.name}", False, f"{why}: this path is unproven",
                   f"bring {vps.name} back (the Pi's other paths are checked on their own), then rerun verify")
        return
    state, probes, sshd = unit_fact(vps.name), probes_fact(inv, pi, vps), sshd_passwords_fact(pi)
    found = gather(remote, [state, probes, sshd], timeout=PROBES_TIMEOUT)
    unit_checks(report, found.value(state), vps.name)
    listener_checks(report, path, present)
    for t in path.tunnels:
        if t.kind == "ssh":
            ok, detail, hint = ssh_through(inv, pi, play.remotes[vps.name], t, vps, remote)
            if not ok and hint == NO_CONNECTION:
                hint = unreachable(vps, t.remote_port, present, firewall) or hint
            report.add(f"{t.name}: ssh lands on {pi.name}", ok, detail, hint)
        else:
            ok, detail, hint = http_through(vps, pi, t, remote, play.remotes[vps.name], inv.settings.verify_ca_file)
            if not ok and hint == NGINX_SILENT:
                port = vps.https_port if has_tls(vps, t) else vps.http_port
                hint = unreachable(vps, port, present, firewall) or hint
            report.add(f"{t.name}: http via nginx reaches {pi.name}", ok, detail, hint)
    passwords_check(report, pi, vps, found.value(sshd))
    probe_checks(report, found.value(probes))


def verify(play: Play) -> list[PathReport]:
    """`invoke verify`: each VPS's listeners, then every path proven: each Pi through each of its VPSes."""
    inv = play.inventory
    pis = play.selected(list(inv.pis.values()))
    reports = {p.name: [PathReport(p.name, vps=v) for v in p.all_vps] for p in pis}
    play.connect_ahead()
    found = play.each(inv.vpses_of_pis(pis), vps_view)

    def prove(remote: Remote) -> None:
        with play.reporter.busy(remote.name, "verify: probes through the VPS"):
            for report in reports[remote.name]:
                present, firewall = found.get(report.vps, (None, None))
                verify_pi(play, remote, report, present, firewall)

    play.each(pis, prove)
    return [r for p in pis for r in reports[p.name]]
