"""`invoke verify`: prove from the laptop that every Pi is reachable as intended, and no further.

Positive checks go the user's way in (SSH through the VPS port or a jump, HTTP through Nginx);
negative probes use the Pi's own tunnel key, on the Pi, so its private half never leaves it.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import http.client
import io
import json
import shlex
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from pitunnel import hostkeys
from pitunnel.inventory import Inventory, PiSpec, TunnelSpec, VpsSpec, has_tls
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.roles.contract import listen_spec, realm
from pitunnel.roles.pi.paths import unit, vps_config_dir, watchdog_unit
from pitunnel.roles.pi.role import D
from pitunnel.roles.pi.sshd import password_warning, passwords_on, public_ssh_ports, sshd_passwords_fact

REACH = "reach "  # checks that fail because a host was out of reach: `verify` exits 4 for them, not 2


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    hint: str = ""
    warning: bool = False  # passed, but printed as WARN: something the owner should change


@dataclass
class PiReport:
    """The checks of one path: the Pi `pi` through its VPS `vps` (a Pi with two VPSes has two reports)."""

    pi: str
    checks: list[Check] = field(default_factory=list)
    vps: str = ""

    def add(self, name: str, passed: bool, detail: str, hint: str = "", *, warning: bool = False) -> None:
        self.checks.append(Check(name, passed, detail, "" if passed and not warning else hint, warning))

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)


def pi_host_keys(inv: Inventory, pi: PiSpec, name: str | None = None) -> paramiko.HostKeys:
    """The Pi's own host keys as the laptop knows them from direct contact (filed under `name` in
    known_hosts: how its connection looks them up, by default its address and port)."""
    keys = paramiko.HostKeys()
    if pi.host_key:
        keytype, blob = pi.host_key.split()[:2]
        keys.add("tunnel", keytype, paramiko.PKey.from_type_string(keytype, base64.b64decode(blob)))
        return keys
    if inv.settings.known_hosts.exists():
        hostkeys.load_known(keys, inv.settings.known_hosts)
    filed = name or hostkeys.known_name(pi.address, pi.port)
    found = keys.lookup(filed)
    out = paramiko.HostKeys()
    for keytype, key in (found or {}).items():
        if hostkeys.revoked_at(inv.settings.known_hosts, filed, key) is None:  # a revoked key proves nothing
            out.add("tunnel", keytype, key)
    return out


def ssh_through(inv: Inventory, pi: PiSpec, vps_remote: Remote, tunnel: TunnelSpec,
                vps: VpsSpec, pi_remote: Remote) -> tuple[bool, str, str]:
    """Log in to the Pi through the tunnel (as its connection logs in: agent, key files); pass only if the far
    end shows this Pi's own host key."""
    expected = pi_host_keys(inv, pi, pi_remote.target.known_name)
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
            return False, f"{where}: {exc}", f"the tunnel is not listening on the VPS: is {unit(vps.name)} up on the Pi?"
    transport2 = paramiko.Transport(sock)
    try:
        transport2.start_client(timeout=10)
        key = transport2.get_remote_server_key()
        known = expected.lookup("tunnel")
        if known is None or known.get(key.get_name()) != key:
            return False, f"{where}: host key {hostkeys.fingerprint(key)} is not {pi.name}'s", \
                "another host answers on this port: check remote_port clashes and the tunnel's -R"
        try:
            pi_remote.authenticate(transport2)
        except paramiko.AuthenticationException:
            if pi.key is None:  # no key named for it: its own host key is the proof
                return True, f"{where}: {pi.name}'s host key ({key.get_name()})", ""
            return False, f"{where}: {pi.name}'s host key, but login refused", \
                "the tunnel reached the Pi's sshd but login failed: was the laptop key pushed?"
        chan = transport2.open_session(timeout=10)
        chan.exec_command("hostname")
        name = chan.makefile().read().decode().strip()
        return True, f"{where}: {pi.name}'s host key, logged in as {pi_remote.target.user}, hostname {name}", ""
    except EOFError:  # paramiko's, when the far end closes before its SSH banner
        return False, f"{where}: closed before the SSH banner", \
            "the VPS accepted but the tunnel did not reach the Pi's sshd: is its tunnel to this VPS connected?"
    except (paramiko.SSHException, OSError) as exc:
        return False, f"{where}: {exc}", "the tunnel reached an sshd but login failed: was the laptop key pushed?"
    finally:
        transport2.close()


BODY_LIMIT = 65536  # bytes of each body compared
SIMILAR_LIMIT = 16384  # bytes of each body compared for likeness, when they differ
NGINX_PAGES = (b"<center>nginx", b"no tunnel here")  # Nginx's own error pages, and the default server's 404


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, as far as verify compares them."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    expires: float | None = None  # over HTTPS: when the certificate the VPS showed expires (epoch seconds)

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.body).hexdigest()[:12]

    @property
    def named(self) -> str | None:
        """The Pi an app's JSON answer names (the lab's API does), if any."""
        try:
            value = json.loads(self.body).get("pi")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def describe(self) -> str:
        shown = self.body[:40].decode(errors="replace") + ("..." if len(self.body) > 40 else "")
        return f"{self.status}, {len(self.body)} bytes (sha256 {self.digest}) {shown!r}"


def nginx_page(answer: Answer) -> bool:
    return any(marker in answer.body for marker in NGINX_PAGES)


def judge(pi: str, via: Answer, local: Answer) -> tuple[bool, str]:
    """Did the answer through the VPS come from this Pi's app? Compared with the same request made on the
    Pi itself: the same status and body; or, for an app that names its Pi (the lab's), that name; or, for a
    page that changes on every request, the same status and type and a body at least 90% alike. A page
    Nginx made itself never passes."""
    if via.status in (502, 503, 504):
        if local.status == via.status:
            return False, f"{via.status} through the VPS, and the app answers {local.status} on the Pi itself too"
        return False, f"{via.status} from Nginx: nothing answered through the tunnel"
    if (via.status, via.body) == (local.status, local.body):
        return True, f"HTTP {via.status}, the same answer as on the Pi itself ({len(via.body)} bytes, sha256 {via.digest})"
    if via.named is not None and via.named != pi:
        return False, f"answered by {via.named}, not {pi}"
    if via.status == local.status and via.named == pi == local.named:
        return True, f"HTTP {via.status}, answered as {pi}, as on the Pi itself"
    # compared on their first 16 KiB: SequenceMatcher takes quadratic time at worst (0.5 s here)
    alike = difflib.SequenceMatcher(None, via.body[:SIMILAR_LIMIT], local.body[:SIMILAR_LIMIT], autojunk=False)
    if (via.status == local.status and via.header("Content-Type") == local.header("Content-Type")
            and not nginx_page(via) and via.body and abs(len(via.body) - len(local.body)) <= len(local.body) // 10
            and alike.real_quick_ratio() >= 0.9 and alike.quick_ratio() >= 0.9 and alike.ratio() >= 0.9):
        return True, (f"HTTP {via.status} as on the Pi itself; the body changes per request "
                      f"({alike.ratio():.0%} alike, {len(via.body)} and {len(local.body)} bytes)")
    what = "status and body differ" if via.status != local.status else "the body differs"
    return False, f"{what}: through the VPS {via.describe()}; on the Pi itself {local.describe()}"


def _answer(response: http.client.HTTPResponse, expires: float | None = None) -> Answer:
    return Answer(response.status, response.read(BODY_LIMIT), tuple(response.getheaders()), expires)


def request_headers(host: str) -> dict[str, str]:
    """The same request through the VPS and on the Pi: what Nginx passes on is then the same too."""
    return {"Host": host, "User-Agent": "pitunnel-verify", "Accept": "*/*", "Accept-Encoding": "identity"}


CERT_DAYS = 14  # a certificate that expires sooner fails verify: its renewal is overdue


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Checks the chain (against the system's CAs, or settings.verify_ca_file's) and the name: never off."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def fetch_via_nginx(vps: VpsSpec, tunnel: TunnelSpec, host: str, tls: ssl.SSLContext | None = None) -> Answer:
    """GET the route from the VPS's Nginx; with `tls`, over HTTPS to the VPS's address, the certificate
    checked for `host` (SNI and name, as a browser that resolved `host` to the VPS would)."""
    conn: http.client.HTTPConnection
    if tls is None:
        conn = http.client.HTTPConnection(vps.address, vps.http_port, timeout=10)
    else:
        conn = http.client.HTTPSConnection(host, vps.https_port, timeout=10, context=tls)
        conn._create_connection = lambda address, *args: socket.create_connection(  # type: ignore[attr-defined]
            (vps.address, address[1]), *args)
    try:
        conn.request("GET", tunnel.path or "/", headers=request_headers(host))
        expires = None
        if isinstance(conn.sock, ssl.SSLSocket):
            peer = conn.sock.getpeercert()
            expires = ssl.cert_time_to_seconds(str(peer["notAfter"])) if peer and "notAfter" in peer else None
        return _answer(conn.getresponse(), expires)
    finally:
        conn.close()


def https_only(vps: VpsSpec, tunnel: TunnelSpec, host: str, via: Answer) -> tuple[bool, str, str]:
    """A route with TLS: its certificate is good for CERT_DAYS more, and plain HTTP answers only with a
    308 to HTTPS."""
    days = ((via.expires or 0) - time.time()) / 86400
    when = time.strftime("%Y-%m-%d", time.gmtime(via.expires or 0))
    if days < CERT_DAYS:
        return False, f"the certificate for {host} expires {when} ({days:.0f} days)", \
            "renewal is overdue: on the VPS, `certbot renew` and `journalctl -u certbot` (or replace tls_certificate)"
    try:
        plain = fetch_via_nginx(vps, tunnel, host)
    except (OSError, http.client.HTTPException) as exc:
        return False, f"plain HTTP: {exc}", "Nginx does not answer on port 80: run provision-vps"
    location = plain.header("Location")
    if plain.status != 308 or not location.startswith("https://"):
        return False, f"plain HTTP answers {plain.status} {location!r}, not a 308 to https", "rerun provision-vps"
    return True, f"certificate valid until {when} ({days:.0f} days); plain HTTP: 308 to {location}", ""


class _Received:
    """A socket stand-in for http.client: the bytes already read from an SSH channel."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, *args: object, **kwargs: object) -> io.BytesIO:
        return io.BytesIO(self.data)


def fetch_over_ssh(transport: paramiko.Transport, port: int, host: str) -> Answer:
    """GET / from 127.0.0.1:port as seen by the host at the other end of `transport` (a direct-tcpip
    channel: nothing runs on that host). Raises paramiko.ChannelException if nothing listens there."""
    chan = transport.open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=10)
    try:
        chan.settimeout(10)
        headers = {**request_headers(host), "Connection": "close"}
        chan.sendall(("GET / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
        data = b""
        while len(data) < 4 * BODY_LIMIT and not _complete(data):
            try:
                chunk = chan.recv(65536)
            except socket.timeout:
                if b"\r\n\r\n" not in data:
                    raise
                break  # an app that keeps the connection open after a body of unknown length
            if not chunk:
                break
            data += chunk
    finally:
        chan.close()
    response = http.client.HTTPResponse(_Received(data), method="GET")  # type: ignore[arg-type]
    response.begin()
    return _answer(response)


def _complete(data: bytes) -> bool:
    """Has a whole response arrived (by its Content-Length, or the last chunk), even if the app keeps
    the connection open?"""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
    fields = {k.strip().lower(): v.strip().lower() for k, v in fields.items()}
    if b"content-length" in fields and fields[b"content-length"].isdigit():
        return len(body) >= int(fields[b"content-length"])
    return fields.get(b"transfer-encoding") == b"chunked" and body.endswith(b"0\r\n\r\n")


def _transport(remote: Remote) -> paramiko.Transport:
    transport = remote.connection().client.get_transport()
    assert transport is not None
    return transport


def http_through(vps: VpsSpec, pi: PiSpec, tunnel: TunnelSpec, pi_remote: Remote,
                 vps_remote: Remote, ca_file: Path | None = None) -> tuple[bool, str, str]:
    """GET the route through Nginx and the same on the Pi itself (through our SSH connection to it, at
    127.0.0.1:local_port), and compare; once more if they differ. Behind basic auth, Nginx's 401 for this
    route plus the tunnel's answer on the VPS (127.0.0.1:remote_port, bypassing Nginx) must both hold.
    A route with TLS is fetched over HTTPS (chain and name checked), and must be HTTPS only."""
    host = tunnel.server_name or vps.public_name or vps.address
    tls = tls_context(ca_file) if has_tls(vps, tunnel) else None
    if tls is not None:
        url = f"https://{host}:{vps.https_port}{tunnel.path or '/'} (at {vps.address})"
    else:
        url = f"http://{vps.address}:{vps.http_port}{tunnel.path or '/'}" + (f" (Host: {host})" if host != vps.address else "")
    local_where = f"127.0.0.1:{tunnel.local_port} on {pi.name}"
    detail = ""
    for attempt in (1, 2):
        try:
            via = front = fetch_via_nginx(vps, tunnel, host, tls)
        except ssl.SSLError as exc:
            return False, f"{url}: {exc}", ("no valid certificate for this name: see provision-vps's certificate line "
                                            "(or settings.verify_ca_file for a private CA)")
        except (OSError, http.client.HTTPException) as exc:
            return False, f"{url}: {exc}", "Nginx does not answer on the VPS: run provision-vps, check the firewall"
        try:
            local = fetch_over_ssh(_transport(pi_remote), tunnel.local_port, host)
        except (paramiko.SSHException, OSError, http.client.HTTPException) as exc:
            return False, f"{url}: nothing to compare with, {local_where}: {exc}", \
                f"the app does not answer on the Pi itself (or its sshd forbids forwarding: AllowTcpForwarding)"
        if tunnel.basic_auth_file is not None:
            wanted = f'realm="{realm(pi.name)}"'
            if via.status != 401 or wanted not in via.header("WWW-Authenticate"):
                return False, f"{url}: {via.describe()}, not Nginx's basic auth for {pi.name} ({wanted})", \
                    "the route is not the one provision-vps wrote: rerun provision-vps"
            try:
                via = fetch_over_ssh(_transport(vps_remote), tunnel.remote_port, host)
            except (paramiko.SSHException, OSError, http.client.HTTPException) as exc:
                return False, f"{url}: 401 from Nginx, but 127.0.0.1:{tunnel.remote_port} on {vps.name}: {exc}", \
                    f"the tunnel is not listening on the VPS: check the Pi's {unit(vps.name)}"
            ok, detail = judge(pi.name, via, local)
            detail = f"401 from Nginx's basic auth ({wanted}); behind it, 127.0.0.1:{tunnel.remote_port} on {vps.name}: {detail}"
        else:
            ok, detail = judge(pi.name, via, local)
        if ok and tls is not None:
            secure, how, hint = https_only(vps, tunnel, host, front)
            if not secure:
                return False, f"{url}: {how}", hint
            detail += f"; {how}"
        if ok:
            return True, f"{url}: {detail}" + (" (second try)" if attempt == 2 else ""), ""
    return False, f"{url}: {detail}", _http_hint(vps, tunnel, host, vps_remote, local)


def _http_hint(vps: VpsSpec, tunnel: TunnelSpec, host: str, vps_remote: Remote, local: Answer) -> str:
    """Which half is wrong: the tunnel (its port on the VPS) or Nginx's route to it."""
    leg = f"127.0.0.1:{tunnel.remote_port} on {vps.name}"
    try:
        behind = fetch_over_ssh(_transport(vps_remote), tunnel.remote_port, host)
    except (paramiko.SSHException, OSError, http.client.HTTPException):
        return f"nothing answers at {leg}: the tunnel is down; check the Pi's {unit(vps.name)}"
    if (behind.status, behind.body) == (local.status, local.body):
        return f"{leg} answers as the Pi itself, so Nginx does not route this request there: rerun provision-vps"
    if local.status != 200 or behind.status != 200:
        return f"{leg} answers {behind.status}; the app on the Pi answers {local.status}: another tunnel holds the port?"
    return "the page differs on every request: verify compares status and body with the Pi's own answer"


def probe_script(pi: PiSpec, vps: VpsSpec, others: list[str], free_port: int) -> str:
    """Negative probes run on the Pi as the tunnel account with the tunnel key: each must be refused. They use
    the tunnel's ssh_config for this VPS without its RemoteForward lines: the running tunnel holds those
    ports, so asking for them again would end each probe (ExitOnForwardFailure) before it proved anything."""
    config = '"$probe_config"'
    ssh = f"runuser -u {shlex.quote(pi.tunnel_user)} -- timeout 15 ssh -F {config}"
    host = D["ssh_host_alias"]
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


def passwords_check(report: PiReport, pi: PiSpec, vps: VpsSpec, sshd_t: str) -> None:
    """Password login, as the Pi's sshd really has it (`sshd -T`, for a connection from 127.0.0.1 as
    tunnel traffic arrives): checked where it matters, for a public ssh tunnel or when the inventory
    turns passwords off."""
    if not public_ssh_ports(pi) and not pi.disable_password_login:
        return
    on = passwords_on(sshd_t)
    seen = ", ".join(sshd_t.split("\n")) or "nothing (sshd -T failed)"
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


def verify_pi(play: Play, remote: Remote, report: PiReport, present: frozenset[str] | None) -> None:
    """Prove one path, into its `report`: the Pi's unit for that VPS, the VPS's listeners (`present`, read by
    roles/site.py; None if the VPS did not answer), SSH and HTTP through that VPS (the VPS's connection
    carries the jumps), and every probe refused."""
    inv = play.inventory
    pi = inv.pis[remote.name].on(report.vps or inv.pis[remote.name].vps)
    report.vps = pi.vps
    vps = inv.vps_of(pi)
    if present is None:
        why = play.why.get(vps.name) or f"{vps.name} ({vps.address}) did not answer"
        report.add(f"{REACH}the VPS {vps.name}", False, f"{why}: this path is unproven",
                   f"bring {vps.name} back (the Pi's other paths are checked on their own), then rerun verify")
        return
    others = [listen_spec(t) for p, t in inv.tunnels_on(vps) if p.name != pi.name]
    used = {t.remote_port for _, t in inv.tunnels_on(vps)}
    free = next(p for p in range(vps.port_range[1], 1024, -1) if p not in used)
    tunnel_unit, watchdog = unit(vps.name), watchdog_unit(vps.name)
    unit_state = remote.run(f"systemctl is-enabled {tunnel_unit}; systemctl is-active {tunnel_unit}; "
                      f"systemctl is-active {watchdog}\n"
                      + probe_script(pi, vps, others, free)
                      + f"({sshd_passwords_fact(pi).script}) | sed 's/^/SSHD /'\n", timeout=120)
    words = unit_state.stdout.split("\n")
    state = f"{words[0].strip()}, {words[1].strip()}" if len(words) > 1 else unit_state.stdout.strip()
    report.add("unit enabled and active", state == "enabled, active", state,
               f"on the Pi: systemctl status {tunnel_unit}; journalctl -u {tunnel_unit}")
    watching = words[2].strip() if len(words) > 2 else "unknown"
    report.add("watchdog active", watching == "active", watching,
               f"without it, a dead connection waits for keepalives after the network is back: on the Pi, "
               f"systemctl status {watchdog}; or rerun provision-pi")
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
            ok, detail, hint = ssh_through(inv, pi, play.remotes[vps.name], t, vps, remote)
            report.add(f"{t.name}: ssh lands on {pi.name}", ok, detail, hint)
        else:
            ok, detail, hint = http_through(vps, pi, t, remote, play.remotes[vps.name], inv.settings.verify_ca_file)
            report.add(f"{t.name}: http via nginx reaches {pi.name}", ok, detail, hint)
    passwords_check(report, pi, vps, "\n".join(l[5:] for l in unit_state.stdout.splitlines() if l.startswith("SSHD ")))
    for line in unit_state.stdout.splitlines():
        if line.startswith("PROBE "):
            parts = line.split(None, 2)
            label, verdict = (line[6:].rsplit(" ok", 1)[0], "ok") if line.endswith(" ok") else (parts[1], "FAIL")
            report.add(f"refused: {label}", verdict == "ok",
                       "refused" if verdict == "ok" else line[6:],
                       "the tunnel key can do more than forward its own ports: rerun provision-vps")


def print_reports(reports: list[PiReport]) -> None:
    for report in reports:
        via = f" via {report.vps}" if report.vps else ""
        print(f"\n{report.pi}{via}: {'PASS' if report.passed else 'FAIL'}")
        for c in report.checks:
            print(f"  {'FAIL' if not c.passed else 'WARN' if c.warning else 'PASS'}  {c.name:<42} {c.detail}")
            if c.hint:
                print(f"        hint: {c.hint}")
