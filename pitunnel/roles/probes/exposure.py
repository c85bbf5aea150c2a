"""Nothing more open than intended: each tunnel bound on the VPS as the inventory says (no further), every
negative probe refused, and password login off where it matters.

The probes run on the Pi as the tunnel account with the tunnel key, so its private half never leaves it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace

from pitunnel.facts import Fact
from pitunnel.inventory import Inventory, PiPath, PiSpec, VpsSpec
from pitunnel.roles.contract import listen_spec
from pitunnel.roles.pi.locations import vps_config_dir
from pitunnel.roles.pi.role import PI_DEFAULTS
from pitunnel.roles.pi.sshd import SshdPasswords, password_warning, public_ssh_ports
from pitunnel.roles.probes.report import PathReport


def listener_checks(report: PathReport, path: PiPath, present: frozenset[str]) -> None:
    """Each tunnel of a Pi's path through one VPS listens there as intended, on loopback or public, and
    not the other way too (`present`: what listens on that VPS)."""
    for t in path.tunnels:
        want = listen_spec(t)
        wrong = listen_spec(replace(t, public=not t.public))  # the other way: on all addresses, or loopback only
        ok = want in present and wrong not in present
        report.add(f"{t.name}: VPS listens on {want}", ok,
                   "bound as intended" if ok else f"listeners on that port: "
                   f"{sorted(a for a in present if a.endswith(f':{t.remote_port}')) or 'none'}",
                   "none: the tunnel is down or its -R was refused (stale listener? see troubleshooting)")


@dataclass(frozen=True)
class Probe:
    """One negative probe's answer: `refused` as it must be, or what got through (`said`)."""

    label: str
    refused: bool
    said: str


def probes(output: str) -> tuple[Probe, ...]:
    """The probes' `PROBE label ok` / `PROBE label FAIL what` lines (a failed probe is named by its first word)."""
    found = []
    for line in output.splitlines():
        if line.startswith("PROBE "):
            said = line[len("PROBE "):]
            refused = said.endswith(" ok")
            found.append(Probe(said.removesuffix(" ok") if refused else said.split()[0], refused, said))
    return tuple(found)


def probe_script(pi: PiSpec, vps: VpsSpec, others: list[str], free_port: int) -> str:
    """Negative probes run on the Pi as the tunnel account with the tunnel key: each must be refused. They use
    the tunnel's ssh_config for this VPS without its RemoteForward lines: the running tunnel holds those
    ports, so asking for them again would end each probe (ExitOnForwardFailure) before it proved anything."""
    config = '"$probe_config"'
    ssh = f"runuser -u {shlex.quote(pi.tunnel_user)} -- timeout 15 ssh -F {config}"
    host = PI_DEFAULTS["ssh_host_alias"]
    lines = [
        f"probe_config=$(mktemp) && grep -v '^[[:space:]]*RemoteForward[[:space:]]' "
        f"{vps_config_dir(vps.name)}/ssh_config > \"$probe_config\" && chmod 644 \"$probe_config\"",
        f"out=$({ssh} {host} id 2>&1); case \"$out\" in *uid=*) echo 'PROBE command FAIL ran: id';; "
        "*) echo 'PROBE command ok';; esac",
        f"out=$({ssh} -tt {host} 'id' 2>&1 </dev/null); case \"$out\" in *uid=*) echo 'PROBE pty FAIL got a shell';; "
        "*) echo 'PROBE pty ok';; esac",
        f"out=$({ssh} -W 127.0.0.1:{vps.port} {host} </dev/null 2>&1 | head -c 200); case \"$out\" in *SSH-2.0*) "
        f"echo 'PROBE forward-to-vps FAIL reached the VPS sshd';; *) echo 'PROBE forward-to-vps ok';; esac",
    ]
    for label, spec in [("other-port", f"127.0.0.1:{free_port}"), *((f"other-pi {s}", s) for s in others)]:
        lines.append(
            f"runuser -u {shlex.quote(pi.tunnel_user)} -- timeout 8 ssh -F {config} -N "
            f"-o ExitOnForwardFailure=yes -R {spec}:127.0.0.1:9 {host} </dev/null >/dev/null 2>&1; rc=$?; "
            f"if [ $rc -eq 124 ]; then echo 'PROBE {label} FAIL listener accepted'; else echo 'PROBE {label} ok'; fi"
        )
    lines.append('rm -f "$probe_config"')
    return "\n".join(lines) + "\n"


NEIGHBOUR_PROBES = 8  # other Pis' listeners tried per path: each try is one login, so verify stays flat with the fleet


def neighbours(own: list[int], others: list[tuple[int, str]]) -> list[str]:
    """The other Pis' listeners (`others`: port and listen spec) a path tries to open: the NEIGHBOUR_PROBES
    nearest its own ports (`own`), where a mistyped range or an off-by-one grant would show first."""
    def distance(item: tuple[int, str]) -> tuple[int, int, str]:
        port, spec = item
        return min((abs(port - o) for o in own), default=port), port, spec
    return [spec for _, spec in sorted(others, key=distance)[:NEIGHBOUR_PROBES]]


def probes_fact(inv: Inventory, pi: PiSpec, vps: VpsSpec) -> Fact[tuple[Probe, ...]]:
    """The probes of one path (`pi` through `vps`): the tunnel key must be refused a command, a shell, a jump
    to the VPS's sshd, a free port of the range (the highest), and the other Pis' listeners nearest its own
    (at most NEIGHBOUR_PROBES: that each key may open its own listeners alone is what provision-vps writes)."""
    own = [t.remote_port for p, t in inv.tunnels_on(vps) if p.name == pi.name]
    others = neighbours(own, [(t.remote_port, listen_spec(t)) for p, t in inv.tunnels_on(vps) if p.name != pi.name])
    used = {t.remote_port for _, t in inv.tunnels_on(vps)}
    free = next(p for p in range(vps.port_range[1], 1024, -1) if p not in used)
    return Fact(f"probes:{vps.name}", probe_script(pi, vps, others, free), probes)


def probe_checks(report: PathReport, found: tuple[Probe, ...]) -> None:
    for probe in found:
        report.add(f"refused: {probe.label}", probe.refused, "refused" if probe.refused else probe.said,
                   "the tunnel key can do more than forward its own ports: rerun provision-vps")


def passwords_check(report: PathReport, pi: PiSpec, vps: VpsSpec, sshd_t: SshdPasswords) -> None:
    """Password login, as the Pi's sshd really has it (`sshd -T`, for a connection from 127.0.0.1 as
    tunnel traffic arrives): checked where it matters, for a public ssh tunnel or when the inventory
    turns passwords off."""
    if not public_ssh_ports(pi) and not pi.disable_password_login:
        return
    on, seen = sshd_t.on, sshd_t.seen
    name = "sshd: password login off"
    if on is False:
        report.add(name, True, f"sshd -T: {seen}")
    elif pi.disable_password_login:
        report.add(name, False, f"disable_password_login is true, but sshd -T says: {seen}",
                   "a drop-in read before ours turns them on again (sshd keeps the first value it reads): on the "
                   "Pi, grep -ri passwordauthentication /etc/ssh/sshd_config /etc/ssh/sshd_config.d/")
    else:
        warning = password_warning(pi, [vps], on) or ""
        report.add(name, True, warning + f" (sshd -T: {seen})", "once key login works, set "
                   f"`disable_password_login: true` for {pi.name} and rerun provision-pi", warning=True)
