"""`invoke verify`: prove from the laptop that every Pi is reachable as intended, and no further.

Positive checks go the user's way in (SSH through the VPS port or a jump, HTTP through Nginx);
negative probes use the Pi's own tunnel key, on the Pi, so its private half never leaves it.
"""

from __future__ import annotations

import base64
import json
import shlex
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import paramiko

from pitunnel import hostkeys
from pitunnel.inventory import Inventory, PiSpec, TunnelSpec, VpsSpec
from pitunnel.play import Play
from pitunnel.remote import Remote
from roles.pi.steps import D, listen_spec


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    hint: str = ""


@dataclass
class PiReport:
    pi: str
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, passed: bool, detail: str, hint: str = "") -> None:
        self.checks.append(Check(name, passed, detail, "" if passed else hint))

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)


def pi_host_keys(inv: Inventory, pi: PiSpec) -> paramiko.HostKeys:
    """The Pi's own host keys as the laptop knows them from direct contact."""
    keys = paramiko.HostKeys()
    if pi.host_key:
        keytype, blob = pi.host_key.split()[:2]
        keys.add("tunnel", keytype, paramiko.PKey.from_type_string(keytype, base64.b64decode(blob)))
        return keys
    if inv.settings.known_hosts.exists():
        keys.load(str(inv.settings.known_hosts))
    found = keys.lookup(hostkeys.known_name(pi.address, pi.port))
    out = paramiko.HostKeys()
    if found:
        for keytype, key in found.items():
            out.add("tunnel", keytype, key)
    return out


def ssh_through(inv: Inventory, pi: PiSpec, vps_remote: Remote, tunnel: TunnelSpec,
                vps: VpsSpec) -> tuple[bool, str, str]:
    """Log in to the Pi through the tunnel; pass only if the far end shows this Pi's own host key."""
    expected = pi_host_keys(inv, pi)
    if not expected.keys():
        return False, "the Pi's host key is unknown to the laptop", "record it on first direct contact (--accept-new-host-keys) or pin host_key in the inventory"
    if tunnel.public:
        where = f"{vps.address}:{tunnel.remote_port}"
        try:
            sock: socket.socket | paramiko.Channel = socket.create_connection((vps.address, tunnel.remote_port), timeout=10)
        except OSError as exc:
            hint = ("Connection refused: nothing listens publicly on the VPS port. Is the tunnel up, and does "
                    "the VPS let it bind publicly (GatewayPorts clientspecified for the tunnel account)?")
            return False, f"{where}: {exc}", hint
    else:
        where = f"jump via {vps.name} to 127.0.0.1:{tunnel.remote_port}"
        transport = vps_remote.connection().client.get_transport()
        assert transport is not None
        try:
            sock = transport.open_channel("direct-tcpip", ("127.0.0.1", tunnel.remote_port), ("127.0.0.1", 0), timeout=10)
        except paramiko.ChannelException as exc:
            return False, f"{where}: {exc}", "the tunnel is not listening on the VPS: is pitunnel.service up on the Pi?"
    transport2 = paramiko.Transport(sock)
    try:
        transport2.start_client(timeout=10)
        key = transport2.get_remote_server_key()
        known = expected.lookup("tunnel")
        if known is None or known.get(key.get_name()) != key:
            return False, f"{where}: host key {hostkeys.fingerprint(key)} is not {pi.name}'s", \
                "another host answers on this port: check remote_port clashes and the tunnel's -R"
        if pi.key is None:
            return True, f"{where}: {pi.name}'s host key ({key.get_name()})", ""
        transport2.auth_publickey(pi.user, paramiko.PKey.from_path(str(pi.key)))
        chan = transport2.open_session(timeout=10)
        chan.exec_command("hostname")
        name = chan.makefile().read().decode().strip()
        return True, f"{where}: {pi.name}'s host key, logged in as {pi.user}, hostname {name}", ""
    except (paramiko.SSHException, OSError) as exc:
        return False, f"{where}: {exc}", "the tunnel reached an sshd but login failed: was the laptop key pushed?"
    finally:
        transport2.close()


def http_through(vps: VpsSpec, pi: PiSpec, tunnel: TunnelSpec) -> tuple[bool, str, str]:
    path = tunnel.path or "/"
    url = f"http://{vps.address}:{vps.http_port}{path}"
    request = urllib.request.Request(url, headers={"Host": tunnel.server_name} if tunnel.server_name else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status, body = resp.status, resp.read(65536)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(65536)
    except OSError as exc:
        return False, f"{url}: {exc}", "Nginx does not answer on the VPS: run provision-vps, check the firewall"
    if status in (502, 503, 504):
        return False, f"{url}: {status} from Nginx", "Nginx is up but the tunnel is not: check pitunnel.service on the Pi"
    if tunnel.basic_auth_file is not None and status == 401:
        return True, f"{url}: 401, basic auth in front as configured", ""
    try:
        named = json.loads(body).get("pi")
    except (ValueError, AttributeError):
        named = None
    if named is not None and named != pi.name:
        return False, f"{url}: answered by {named}, not {pi.name}", "two tunnels share a port: check remote_port"
    return True, f"{url}: HTTP {status}" + (f" from {named}" if named else ""), ""


def probe_script(pi: PiSpec, vps: VpsSpec, others: list[str], free_port: int) -> str:
    """Negative probes run on the Pi as the tunnel account with the tunnel key: each must be refused."""
    ssh = f"runuser -u {shlex.quote(pi.tunnel_user)} -- timeout 15 ssh -F {D['config_dir']}/ssh_config"
    host = D["ssh_host_alias"]
    lines = [
        f"out=$({ssh} {host} id 2>&1); case \"$out\" in *uid=*) echo 'PROBE command FAIL ran: id';; "
        "*) echo 'PROBE command ok';; esac",
        f"out=$({ssh} -tt {host} 'id' 2>&1 </dev/null); case \"$out\" in *uid=*) echo 'PROBE pty FAIL got a shell';; "
        "*) echo 'PROBE pty ok';; esac",
        f"out=$({ssh} -W 127.0.0.1:{vps.port} {host} </dev/null 2>&1 | head -c 200); case \"$out\" in *SSH-2.0*) "
        f"echo 'PROBE forward-to-vps FAIL reached the VPS sshd';; *) echo 'PROBE forward-to-vps ok';; esac",
    ]
    for label, spec in [("other-port", f"127.0.0.1:{free_port}"), *((f"other-pi {s}", s) for s in others)]:
        lines.append(
            f"runuser -u {shlex.quote(pi.tunnel_user)} -- timeout 8 ssh -F {D['config_dir']}/ssh_config -N "
            f"-o ExitOnForwardFailure=yes -R {spec}:127.0.0.1:9 {host} </dev/null >/dev/null 2>&1; rc=$?; "
            f"if [ $rc -eq 124 ]; then echo 'PROBE {label} FAIL listener accepted'; else echo 'PROBE {label} ok'; fi"
        )
    return "\n".join(lines) + "\n"


def verify(play: Play) -> list[PiReport]:
    inv = play.inventory
    pis = play.selected(list(inv.pis.values()))
    reports: dict[str, PiReport] = {p.name: PiReport(p.name) for p in pis}
    ss: dict[str, str] = {}

    def on_vps(remote: Remote) -> None:
        ss[remote.name] = remote.run("ss -Htln").stdout

    play.each(list({inv.vps_of(p).name: inv.vps_of(p) for p in pis}.values()), on_vps)

    def on_pi(remote: Remote) -> None:
        pi = inv.pis[remote.name]
        vps = inv.vps_of(pi)
        report = reports[pi.name]
        others = [listen_spec(t) for p, t in inv.tunnels_on(vps) if p.name != pi.name]
        used = {t.remote_port for _, t in inv.tunnels_on(vps)}
        free = next(p for p in range(vps.port_range[1], 1024, -1) if p not in used)
        unit = remote.run(f"systemctl is-enabled {D['unit']}; systemctl is-active {D['unit']}; "
                          f"systemctl is-active {D['watchdog_unit']}\n"
                          + probe_script(pi, vps, others, free), timeout=120)
        words = unit.stdout.split("\n")
        state = f"{words[0].strip()}, {words[1].strip()}" if len(words) > 1 else unit.stdout.strip()
        report.add("unit enabled and active", state == "enabled, active", state,
                   f"on the Pi: systemctl status {D['unit']}; journalctl -u {D['unit']}")
        watchdog = words[2].strip() if len(words) > 2 else "unknown"
        report.add("watchdog active", watchdog == "active", watchdog,
                   f"without it, a dead connection waits for keepalives after the network is back: on the Pi, "
                   f"systemctl status {D['watchdog_unit']}; or rerun provision-pi")
        present = {line.split()[3] for line in ss.get(vps.name, "").splitlines() if len(line.split()) >= 4}
        for t in pi.tunnels:
            want = listen_spec(t)
            wrong = f"0.0.0.0:{t.remote_port}" if not t.public else f"127.0.0.1:{t.remote_port}"
            ok = want in present and wrong not in present
            report.add(f"{t.name}: VPS listens on {want}", ok,
                       "bound as intended" if ok else f"listeners on that port: "
                       f"{sorted(a for a in present if a.endswith(f':{t.remote_port}')) or 'none'}",
                       "none: the tunnel is down or its -R was refused (stale listener? see troubleshooting)")
        for t in pi.tunnels:
            if t.kind == "ssh":
                ok, detail, hint = ssh_through(inv, pi, play.remotes[vps.name], t, vps)
                report.add(f"{t.name}: ssh lands on {pi.name}", ok, detail, hint)
            else:
                ok, detail, hint = http_through(vps, pi, t)
                report.add(f"{t.name}: http via nginx reaches {pi.name}", ok, detail, hint)
        for line in unit.stdout.splitlines():
            if line.startswith("PROBE "):
                parts = line.split(None, 2)
                label, verdict = (line[6:].rsplit(" ok", 1)[0], "ok") if line.endswith(" ok") else (parts[1], "FAIL")
                report.add(f"refused: {label}", verdict == "ok",
                           "refused" if verdict == "ok" else line[6:],
                           "the tunnel key can do more than forward its own ports: rerun provision-vps")

    play.each(pis, on_pi)
    return list(reports.values())


def print_reports(reports: list[PiReport]) -> None:
    for report in reports:
        print(f"\n{report.pi}: {'PASS' if report.passed else 'FAIL'}")
        for c in report.checks:
            print(f"  {'PASS' if c.passed else 'FAIL'}  {c.name:<42} {c.detail}")
            if c.hint:
                print(f"        hint: {c.hint}")
