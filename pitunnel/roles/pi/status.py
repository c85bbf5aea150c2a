"""`invoke status`: each tunnel up or down, since when, and how often it reconnected."""

from __future__ import annotations

from dataclasses import dataclass

from pitunnel.inventory import PiSpec
from pitunnel.remote import Remote
from pitunnel.roles.contract import listen_spec
from pitunnel.roles.pi.paths import unit


def status_script(vps: str) -> str:
    """The state of the Pi's tunnel unit to one VPS, and its ssh starts from autossh's journal lines."""
    name = unit(vps)
    return f"""systemctl show {name} -p ActiveState -p ActiveEnterTimestamp -p NRestarts --value
journalctl -u {name} -o short-iso --no-pager 2>/dev/null | grep -c 'starting ssh' || true
journalctl -u {name} -o short-iso --no-pager 2>/dev/null | grep 'starting ssh' | tail -1 | cut -d' ' -f1
journalctl -u {name} -o short-iso --no-pager 2>/dev/null | grep -v 'starting ssh' \
  | grep -Ei 'error|fail|refused|denied|timed? ?out|closed|reset|unreachable|exited' | tail -1
"""


@dataclass
class TunnelStatus:
    pi: str
    tunnel: str
    listen: str
    up: bool
    unit: str
    since: str
    ssh_starts: int
    last_start: str
    unit_restarts: int
    last_error: str = ""  # the unit's last journal line that reads like a failure, with its time
    known: bool = True  # False: neither the Pi nor its VPS could be read, so up or down is not known
    certificate: str = "-"  # http routes: when the certificate it answers with expires (read on the VPS)
    vps: str = ""  # the VPS of this path (a Pi with several VPSes has a row per tunnel per VPS)

    @property
    def reconnects(self) -> int:
        """ssh starts after the first."""
        return max(0, self.ssh_starts - 1)

    def document(self) -> dict[str, object]:
        """This tunnel in `status --json`."""
        return {"pi": self.pi, "tunnel": self.tunnel, "vps": self.vps, "listen": self.listen, "state": "up" if self.up else "down" if self.known else "unknown",
                "unit": self.unit, "since": self.since, "reconnects": self.reconnects, "ssh_starts": self.ssh_starts,
                "last_connect": self.last_start, "unit_restarts": self.unit_restarts,
                "last_error": self.last_error or None,
                "certificate_expires": None if self.certificate == "-" else self.certificate}


def status_pi(remote: Remote, pi: PiSpec, listening: frozenset[str]) -> list[TunnelStatus]:
    """This Pi's tunnels on one VPS (`pi`: its path there), each up if that path's unit is active and the VPS
    (whose `listening` roles/site.py read) listens on it."""
    lines = remote.run(status_script(pi.vps)).stdout.splitlines() + ["", "", "", "", "", ""]
    # systemctl show prints values in its own property order: NRestarts, ActiveState, ActiveEnterTimestamp
    restarts, active, since, starts, last, error = (l.strip() for l in lines[:6])
    return [TunnelStatus(pi.name, t.name, listen_spec(t), listen_spec(t) in listening and active == "active",
                         active, since or "-", int(starts or 0), last or "-", int(restarts or 0), error,
                         vps=pi.vps)
            for t in pi.tunnels]


def unreached(pi: PiSpec, listening: frozenset[str] | None, why: str) -> list[TunnelStatus]:
    """A Pi the laptop could not reach: each tunnel is up as far as its VPS listens on it (None: VPS unread)."""
    return [TunnelStatus(pi.name, t.name, listen_spec(t), listening is not None and listen_spec(t) in listening,
                         "unknown", "-", 0, "-", 0, f"the laptop could not reach the Pi: {why}",
                         known=listening is not None, vps=pi.vps) for t in pi.tunnels]


def is_down(row: TunnelStatus) -> bool:
    """Known to be down (what makes `status` exit 2)."""
    return row.known and not row.up


def print_status(rows: list[TunnelStatus]) -> None:
    print(f"\n{'pi':<8} {'tunnel':<8} {'vps':<8} {'listen on VPS':<20} {'state':<5} {'unit':<9} {'up since':<28} "
          f"{'ssh starts':>10} {'last (re)connect':<25} {'unit restarts':>13}  certificate expires")
    for r in rows:
        state = "UP" if r.up else "DOWN" if r.known else "?"
        print(f"{r.pi:<8} {r.tunnel:<8} {r.vps:<8} {r.listen:<20} {state:<5} {r.unit:<9} {r.since:<28} "
              f"{r.ssh_starts:>10} {r.last_start:<25} {r.unit_restarts:>13}  {r.certificate}")
    for r in rows:
        if not r.up and r.last_error:
            print(f"{r.pi}/{r.tunnel} via {r.vps}: last error: {r.last_error}")
