"""`invoke status`: each tunnel up or down, since when, how often it reconnected, and its certificate.

Each VPS's listeners, the sessions holding them and its certificates are read first (one round trip per VPS:
every tunnel's state without a Pi login), then, when asked or for a small selection, each Pi's tunnel unit to
each of its VPSes (a row per tunnel per path): both as typed facts."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from pitunnel.facts import Fact, gather, read
from pitunnel.inventory import PiPath, TunnelSpec, VpsSpec, acme_name
from pitunnel.ops import q
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.roles.contract import listen_spec
from pitunnel.roles.probes.unit import tunnel_fact
from pitunnel.roles.vps.acme import AcmeFound, acme_fact


UNKNOWN = "?"  # the table's word for a value status could not read
WAITING = "enrolled: its bootstrap tunnel is up, waiting for provision-pi (autossh, a key made on the Pi)"
# `status` logs in to the Pis too when it selects at most this many (a table one reads line by line, as bench.fleet
# measures it); past it, each VPS alone (one read each) unless --pis asks (docs/cli.md)
PI_DETAILS_UP_TO = 20


@dataclass
class TunnelStatus:
    pi: str
    tunnel: str
    listen: str
    up: bool
    unit: str | None  # None (here and below): not known, the Pi could not be read (`?` in the table, null in JSON)
    since: str | None
    ssh_starts: int | None
    last_start: str | None
    unit_restarts: int | None
    last_error: str = ""  # the unit's last journal line that reads like a failure, with its time
    known: bool = True  # False: neither the Pi nor its VPS could be read, so up or down is not known
    certificate: str = "-"  # http routes: when the certificate it answers with expires (read on the VPS)
    vps: str = ""  # the VPS of this path (a Pi with several VPSes has a row per tunnel per VPS)
    session_since: str | None = None  # when the VPS's session holding its listener began (None: none, or not read)
    pi_read: bool = True  # False: the VPS's view alone (the Pi's own columns were not asked for: null in JSON)

    @property
    def reconnects(self) -> int | None:
        """ssh starts after the first (None: not known)."""
        return None if self.ssh_starts is None else max(0, self.ssh_starts - 1)

    def document(self) -> dict[str, object]:
        """This tunnel in `status --json`."""
        return {"pi": self.pi, "tunnel": self.tunnel, "vps": self.vps, "listen": self.listen, "state": "up" if self.up else "down" if self.known else "unknown",
                "unit": self.unit, "since": self.since, "reconnects": self.reconnects, "ssh_starts": self.ssh_starts,
                "last_connect": self.last_start, "unit_restarts": self.unit_restarts,
                "last_error": self.last_error or None,
                "certificate_expires": None if self.certificate == "-" else self.certificate,
                "session_since": self.session_since}


def status_pi(remote: Remote, path: PiPath, listening: frozenset[str]) -> list[TunnelStatus]:
    """This Pi's tunnels on one VPS (`path`: its path there), each up if that path's unit is active and the VPS
    (whose `listening` `status` read) listens on it."""
    state = read(remote, tunnel_fact(path.vps))
    if state.active != "active" and state.bootstrap == "active":  # enrolled, its own tunnel not there yet
        return [TunnelStatus(path.name, t.name, listen_spec(t), listen_spec(t) in listening, "bootstrap", "-", None,
                             "-", None, WAITING, vps=path.vps) for t in path.tunnels]
    return [TunnelStatus(path.name, t.name, listen_spec(t), listen_spec(t) in listening and state.active == "active",
                         state.active, state.since or "-", state.ssh_starts, state.last_start or "-", state.restarts,
                         state.last_error, vps=path.vps)
            for t in path.tunnels]


def unreached(path: PiPath, listening: frozenset[str] | None, why: str) -> list[TunnelStatus]:
    """A Pi the laptop could not reach: each tunnel is up as far as its VPS listens on it (None: VPS unread)."""
    return [TunnelStatus(path.name, t.name, listen_spec(t), listening is not None and listen_spec(t) in listening,
                         None, None, None, None, None, f"the laptop could not reach the Pi: {why}",
                         known=listening is not None, vps=path.vps) for t in path.tunnels]


def is_down(row: TunnelStatus) -> bool:
    """Known to be down (what makes `status` exit 2)."""
    return row.known and not row.up


def print_status(rows: list[TunnelStatus]) -> None:
    if rows and not any(r.pi_read for r in rows):
        print_vps_view(rows)
        return
    print(f"\n{'pi':<8} {'tunnel':<8} {'vps':<8} {'listen on VPS':<20} {'state':<5} {'unit':<9} {'up since':<28} "
          f"{'ssh starts':>10} {'last (re)connect':<25} {'unit restarts':>13}  certificate expires")
    for r in rows:
        state = "UP" if r.up else "DOWN" if r.known else "?"
        unit, since, starts, last, restarts = (UNKNOWN if v is None else v for v in
                                               (r.unit, r.since, r.ssh_starts, r.last_start, r.unit_restarts))
        print(f"{r.pi:<8} {r.tunnel:<8} {r.vps:<8} {r.listen:<20} {state:<5} {unit:<9} {since:<28} "
              f"{starts:>10} {last:<25} {restarts:>13}  {r.certificate}")
    for r in rows:
        if r.last_error == WAITING:
            print(f"{r.pi}/{r.tunnel} via {r.vps}: {WAITING}")
        elif not r.up and r.last_error:
            print(f"{r.pi}/{r.tunnel} via {r.vps}: last error: {r.last_error}")


def print_vps_view(rows: list[TunnelStatus]) -> None:
    """The VPSes' view: each tunnel's listener and the session holding it, no Pi's own columns."""
    print(f"\n{'pi':<8} {'tunnel':<8} {'vps':<8} {'listen on VPS':<20} {'state':<5} {'session since':<23}  "
          "certificate expires")
    for r in rows:
        state = "UP" if r.up else "DOWN" if r.known else "?"
        print(f"{r.pi:<8} {r.tunnel:<8} {r.vps:<8} {r.listen:<20} {state:<5} {r.session_since or '-':<23}  {r.certificate}")
    pis = len({r.pi for r in rows})
    print(f"{pis} Pis as their VPSes see them; `status --pis` also logs in to each for its unit, ssh starts, "
          "restarts and last error (-l to pick some)")


_PID = re.compile(r"pid=(\d+)")


@dataclass(frozen=True)
class Held:
    """The listeners a VPS's tunnel account holds (its Pis' sessions), and since when (UTC) each is held."""

    listeners: frozenset[str]
    since: Mapping[str, str]


def held_listeners(output: str) -> Held:
    """From the fact below: the VPS's clock (`NOW` seconds), `ss -Htlnp`'s lines, and `P pid seconds-running` of
    the tunnel account's processes. A listener another process holds on a tunnel's port is not that tunnel."""
    now, owners, ages = None, {}, {}
    for line in output.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "NOW" and words[1].isdigit():
            now = int(words[1])
        elif len(words) == 3 and words[0] == "P" and words[1].isdigit() and words[2].isdigit():
            ages[int(words[1])] = int(words[2])
        elif len(words) >= 4 and words[0] == "LISTEN":
            owners[words[3]] = [int(pid) for pid in _PID.findall(line)]
    sessions = {listen: next(pid for pid in pids if pid in ages) for listen, pids in owners.items()
                if any(pid in ages for pid in pids)}
    since = {} if now is None else {listen: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now - ages[pid]))
                                    for listen, pid in sessions.items()}
    return Held(frozenset(sessions), since)


def held_fact(vps: VpsSpec) -> Fact[Held]:
    """What the tunnel account's sessions hold, and since when (a session holds its Pi's listeners)."""
    return Fact("session-starts", f"echo \"NOW $(date -u +%s)\"; ss -Htlnp; "
                f"ps -o pid=,etimes= -u {q(vps.tunnel_user)} 2>/dev/null | sed 's/^ */P /'; true", held_listeners)


@dataclass(frozen=True)
class VpsSeen:
    """What status reads of a VPS: the tunnels' listeners its tunnel account holds, since when, and its
    certificates with their expiry."""

    listeners: frozenset[str]
    certificates: AcmeFound
    since: Mapping[str, str] = field(default_factory=dict)


def vps_seen(remote: Remote, vps: VpsSpec) -> VpsSeen:
    """One round trip."""
    facts = gather(remote, [acme_fact(vps), held_fact(vps)])
    held = facts.value(held_fact(vps))
    return VpsSeen(held.listeners, facts.value(acme_fact(vps)), held.since)


def seen_by_vps(path: PiPath, seen: VpsSeen | None) -> list[TunnelStatus]:
    """A Pi's tunnels on one VPS as that VPS alone sees them (None: the VPS could not be read)."""
    return [TunnelStatus(path.name, t.name, listen_spec(t), seen is not None and listen_spec(t) in seen.listeners,
                         None, None, None, None, None, known=seen is not None, vps=path.vps, pi_read=False)
            for t in path.tunnels]


def certificate_expiry(vps: VpsSpec, tunnel: TunnelSpec, found: AcmeFound) -> str:
    """When the certificate an http route answers with expires, as status shows it."""
    name = acme_name(vps, tunnel)
    if name is not None and name in found.certs and found.certs[name].live:
        return found.certs[name].not_after or "?"
    if vps.tls_certificate:
        return found.given_not_after or "?"
    return "none yet" if name else "-"


def status(play: Play, pis_too: bool | None = None) -> list[TunnelStatus]:
    """`invoke status`: each VPS's listeners, sessions and certificates, then (`pis_too`; None: when at most
    PI_DETAILS_UP_TO Pis are selected) each Pi's tunnels on each of its VPSes (a row per path)."""
    inv = play.inventory
    pis = play.selected(list(inv.pis.values()))
    read_pis = len(pis) <= PI_DETAILS_UP_TO if pis_too is None else pis_too
    if read_pis:
        play.connect_ahead()
    found = play.each(inv.vpses_of_pis(pis), lambda remote: vps_seen(remote, inv.vps[remote.name]))

    def listening(path: PiPath) -> frozenset[str] | None:
        return found[path.vps].listeners if path.vps in found else None

    if read_pis:
        rows = play.each(pis, lambda remote: [r for path in inv.pis[remote.name].paths()
                                              for r in status_pi(remote, path, listening(path) or frozenset())])
    else:
        rows = {p.name: [r for path in p.paths() for r in seen_by_vps(path, found.get(path.vps))] for p in pis}
    for p in pis:  # a Pi out of reach: its tunnels as each VPS sees them
        if p.name not in rows and p.name in play.why:
            rows[p.name] = [r for path in p.paths() for r in unreached(path, listening(path), play.why[p.name])]
    for pi_rows in rows.values():
        for row in pi_rows:
            path = inv.pis[row.pi].path(row.vps)
            tunnel = next(t for t in path.tunnels if t.name == row.tunnel)
            if row.vps in found:
                row.session_since = found[row.vps].since.get(row.listen) if row.up else None
            if tunnel.kind == "http" and row.vps in found:
                row.certificate = certificate_expiry(inv.vps[row.vps], tunnel, found[row.vps].certificates)
    return sorted((r for p in pis for r in rows.get(p.name, [])), key=lambda r: (r.pi, r.tunnel))  # stable: paths in inventory order
