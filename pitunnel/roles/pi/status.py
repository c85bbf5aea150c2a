"""`invoke status`: each tunnel up or down, since when, and how often it reconnected."""

from __future__ import annotations

from dataclasses import dataclass

from pitunnel.inventory import PiSpec
from pitunnel.remote import Remote
from pitunnel.roles.contract import listen_spec
from pitunnel.roles.pi.steps import unit


def status_script(vps: str) -> str:
    """The state of the Pi's tunnel unit to one VPS, and its ssh starts from autossh's journal lines."""
    name = unit(vps)
    return f"""systemctl show {name} -p ActiveState -p ActiveEnterTimestamp -p NRestarts --value
journalctl -u {name} -o short-iso --no-pager 2>/dev/null | grep -c 'starting ssh' || true
journalctl -u {name} -o short-iso --no-pager 2>/dev/null | grep 'starting ssh' | tail -1 | cut -d' ' -f1
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
    vps: str = ""  # the VPS of this path (a Pi with several VPSes has a row per tunnel per VPS)


def status_pi(remote: Remote, pi: PiSpec, listening: frozenset[str]) -> list[TunnelStatus]:
    """This Pi's tunnels on one VPS (`pi`: its path there), each up if that path's unit is active and the VPS
    (whose `listening` roles/site.py read) listens on it."""
    lines = remote.run(status_script(pi.vps)).stdout.splitlines() + ["", "", "", "", "", ""]
    # systemctl show prints values in its own property order: NRestarts, ActiveState, ActiveEnterTimestamp
    restarts, active, since, starts, last = (l.strip() for l in lines[:5])
    return [TunnelStatus(pi.name, t.name, listen_spec(t), listen_spec(t) in listening and active == "active",
                         active, since or "-", int(starts or 0), last or "-", int(restarts or 0), vps=pi.vps)
            for t in pi.tunnels]


def print_status(rows: list[TunnelStatus]) -> None:
    print(f"\n{'pi':<8} {'tunnel':<8} {'vps':<8} {'listen on VPS':<20} {'state':<5} {'unit':<9} {'up since':<28} "
          f"{'ssh starts':>10} {'last (re)connect':<25} {'unit restarts':>13}")
    for r in rows:
        print(f"{r.pi:<8} {r.tunnel:<8} {r.vps:<8} {r.listen:<20} {'UP' if r.up else 'DOWN':<5} {r.unit:<9} {r.since:<28} "
              f"{r.ssh_starts:>10} {r.last_start:<25} {r.unit_restarts:>13}")
