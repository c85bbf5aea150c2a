"""HTTP through Nginx reaches the Pi's app: the route fetched through the VPS and compared with the same
request made on the Pi itself; behind basic auth, Nginx's 401 and the tunnel's answer on the VPS; with TLS,
the certificate's name, chain and days left, and plain HTTP only a redirect to HTTPS."""

from __future__ import annotations

import difflib
import hashlib
import http.client
import io
import json
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from pitunnel.inventory import PiSpec, TunnelSpec, VpsSpec, has_tls
from pitunnel.remote import Remote
from pitunnel.roles.contract import listen_spec, realm
from pitunnel.roles.pi.locations import unit

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


# the hint when Nginx does not answer (verify tells the causes apart: probes/reach.py)
NGINX_SILENT = "Nginx does not answer on the VPS: run provision-vps, check the firewall"

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
        state = f"expired {when} ({-days:.0f} days ago)" if days < 0 else f"expires {when} (in {days:.0f} days)"
        return False, f"the certificate for {host} {state}", \
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
            return False, f"{url}: {exc}", NGINX_SILENT
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
                return False, f"{url}: 401 from Nginx, but {listen_spec(tunnel)} on {vps.name}: {exc}", \
                    f"the tunnel is not listening on the VPS: check the Pi's {unit(vps.name)}"
            ok, detail = judge(pi.name, via, local)
            detail = f"401 from Nginx's basic auth ({wanted}); behind it, {listen_spec(tunnel)} on {vps.name}: {detail}"
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
    leg = f"{listen_spec(tunnel)} on {vps.name}"  # an http tunnel listens on loopback only
    try:
        behind = fetch_over_ssh(_transport(vps_remote), tunnel.remote_port, host)
    except (paramiko.SSHException, OSError, http.client.HTTPException):
        return f"nothing answers at {leg}: the tunnel is down; check the Pi's {unit(vps.name)}"
    if (behind.status, behind.body) == (local.status, local.body):
        return f"{leg} answers as the Pi itself, so Nginx does not route this request there: rerun provision-vps"
    if local.status != 200 or behind.status != 200:
        return f"{leg} answers {behind.status}; the app on the Pi answers {local.status}: another tunnel holds the port?"
    return "the page differs on every request: verify compares status and body with the Pi's own answer"
