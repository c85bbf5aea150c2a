"""The tunnel's unit on the Pi, as facts: for verify, whether it and its watchdog are enabled and active; for
status, since when, how often it restarted, and its ssh starts and last error from autossh's journal lines.

Each script prints `name=value` lines, so each value is read by its name, never by its line's position."""

from __future__ import annotations

from dataclasses import dataclass

from pitunnel.facts import Fact
from pitunnel.roles.pi.locations import bootstrap_unit, unit, watchdog_unit


def fields(output: str) -> dict[str, str]:
    """The `name=value` lines of an output (other lines, such as a stray error, are no field)."""
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


@dataclass(frozen=True)
class UnitState:
    """What systemctl says of the tunnel's unit to one VPS and of its watchdog (None: not in the output)."""

    enabled: str | None = None  # empty: is-enabled printed nothing (a unit that is missing)
    active: str | None = None
    watchdog_active: str | None = None

    @property
    def state(self) -> str:
        """As verify shows it: "enabled, active"."""
        return ", ".join(v for v in (self.enabled, self.active) if v is not None)

    @property
    def watchdog(self) -> str:
        return self.watchdog_active if self.watchdog_active is not None else "unknown"


def unit_state(output: str) -> UnitState:
    found = fields(output)
    return UnitState(found.get("enabled"), found.get("active"), found.get("watchdog"))


def unit_fact(vps: str) -> Fact[UnitState]:
    """The tunnel's unit to `vps` and its watchdog: enabled, active."""
    name, watchdog = unit(vps), watchdog_unit(vps)
    return Fact(f"tunnel-unit:{vps}",
                f"printf 'enabled=%s\\nactive=%s\\nwatchdog=%s\\n' \"$(systemctl is-enabled {name} 2>/dev/null)\" "
                f"\"$(systemctl is-active {name} 2>/dev/null)\" \"$(systemctl is-active {watchdog} 2>/dev/null)\"",
                unit_state)


@dataclass(frozen=True)
class TunnelState:
    """The tunnel's unit to one VPS, as status shows it (empty: not known)."""

    active: str = ""
    since: str = ""
    restarts: int = 0
    ssh_starts: int = 0
    last_start: str = ""
    last_error: str = ""  # the unit's last journal line that reads like a failure, with its time
    bootstrap: str = ""  # an enrolled Pi's bootstrap tunnel to that VPS: "active" until provision-pi retires it


def tunnel_state(output: str) -> TunnelState:
    found = {k: v.strip() for k, v in fields(output).items()}
    return TunnelState(found.get("ActiveState", ""), found.get("ActiveEnterTimestamp", ""),
                       int(found.get("NRestarts") or 0), int(found.get("SshStarts") or 0),
                       found.get("LastStart", ""), found.get("LastError", ""), found.get("Bootstrap", ""))


def tunnel_fact(vps: str) -> Fact[TunnelState]:
    """The state of the Pi's tunnel unit to one VPS, and its ssh starts from autossh's journal lines."""
    name = unit(vps)
    journal = f"journalctl -u {name} -o short-iso --no-pager 2>/dev/null"
    return Fact(f"tunnel-state:{vps}", f"""systemctl show {name} -p ActiveState -p ActiveEnterTimestamp -p NRestarts
printf 'SshStarts=%s\\n' "$({journal} | grep -c 'starting ssh')"
printf 'LastStart=%s\\n' "$({journal} | grep 'starting ssh' | tail -1 | cut -d' ' -f1)"
printf 'LastError=%s\\n' "$({journal} | grep -v 'starting ssh' \\
  | grep -Ei 'error|fail|refused|denied|timed? ?out|closed|reset|unreachable|exited' | tail -1)"
printf 'Bootstrap=%s\\n' "$(systemctl is-active {bootstrap_unit(vps)} 2>/dev/null)"
""", tunnel_state)
