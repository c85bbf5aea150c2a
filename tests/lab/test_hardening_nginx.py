"""Nginx on the VPS, hardened (issue 11, rows 5 and 9), on real hosts: a WebSocket through Nginx and
the tunnel (handshake, echo, idle past the API timeout); a plain API route times out at 60 s; the client's
X-Forwarded-For is replaced, the Server header has no version, a body over client_max_body_size gets 413;
files named the old way (PI-TUNNEL) are pruned by a rerun."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
import yaml

from lab import LAPTOP_ADDR, VPS_ADDR
from pitunnel.roles.site import provision as provision_site
from tests.conftest import lab_up
from tests.lab.runs import in_host, play

pytestmark = pytest.mark.lab
VPS = str(VPS_ADDR)
LOCATIONS = "/etc/nginx/pitunnel/locations"
SITES = "/etc/nginx/sites-enabled"
AUTH = "/etc/nginx/pitunnel/auth"


def recap(p) -> dict[str, tuple[int, int]]:  # type: ignore[no-untyped-def]
    return {h: (r.changed, r.failed + r.unreachable) for h, r in p.reporter.recaps.items()}


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = lab_up(1).inventory
    doc = yaml.safe_load(base.read_text())
    doc["pis"]["pi1"]["tunnels"].update({
        "api": {"type": "http", "local_port": 80, "path": "/pi1/", "client_max_body_size": "1k"},
        "ws": {"type": "http", "local_port": 80, "path": "/pi1-ws/", "websocket": True},
        "www": {"type": "http", "local_port": 80, "server_name": "www.pi1.test"},
    })
    path = tmp_path_factory.mktemp("nginx") / "hosts.yml"
    path.write_text(yaml.safe_dump(doc))
    code, p = play(path, provision_site)
    assert code == 0, p and recap(p)
    return path


def request(method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(VPS, 80, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class WebSocket:
    """A minimal RFC 6455 client on a plain socket: handshake, masked text frames out, frames in."""

    def __init__(self, path: str, host: str = VPS) -> None:
        self.sock = socket.create_connection((VPS, 80), timeout=10)
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            head += chunk
        self.head, _, self.rest = head.partition(b"\r\n\r\n")
        self.status = int(self.head.split()[1])
        self.headers = {line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip()
                        for line in self.head.decode().split("\r\n")[1:] if ":" in line}

    def accepted(self) -> bool:
        want = base64.b64encode(hashlib.sha1((self.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
                                .digest()).decode()
        return self.status == 101 and self.headers.get("sec-websocket-accept") == want

    def send_text(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        assert len(data) < 126
        self.sock.sendall(bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n: int) -> bytes:
        while len(self.rest) < n:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed by the far end")
            self.rest += chunk
        out, self.rest = self.rest[:n], self.rest[n:]
        return out

    def receive(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        return first & 0x0F, self._read(length)

    def close(self) -> None:
        self.sock.close()


def test_websocket_handshake_and_echo_through_the_tunnel(inventory: Path) -> None:
    ws = WebSocket("/pi1-ws/")
    try:
        assert ws.accepted(), ws.head
        ws.send_text("hello through the tunnel")
        assert ws.receive() == (0x1, b"hello through the tunnel")
    finally:
        ws.close()


def test_plain_route_passes_no_upgrade(inventory: Path) -> None:
    """websocket: false (the default): Nginx does not pass Upgrade, so the Pi answers a plain request."""
    ws = WebSocket("/pi1/")
    try:
        assert ws.status == 200, ws.head
    finally:
        ws.close()


def test_idle_websocket_outlives_the_api_timeout(inventory: Path) -> None:
    """Both at once: a WebSocket left idle 70 s still echoes; an API call that waits 70 s gets 504 at 60 s."""
    ws = WebSocket("/pi1-ws/")
    assert ws.accepted(), ws.head
    api: dict[str, object] = {}

    def slow_call() -> None:
        started = time.monotonic()
        try:
            status, _, _ = request("GET", "/pi1/?sleep=75", timeout=90)
            api["status"] = status
        except OSError as exc:
            api["status"] = repr(exc)
        api["seconds"] = time.monotonic() - started

    caller = threading.Thread(target=slow_call)
    caller.start()
    try:
        ws.sock.settimeout(80)
        time.sleep(70)
        ws.send_text("still here")
        assert ws.receive() == (0x1, b"still here")
    finally:
        ws.close()
        caller.join(30)
    assert api.get("status") == 504, api
    assert 58 <= float(api["seconds"]) <= 66, api  # type: ignore[arg-type]


def test_client_x_forwarded_for_is_replaced(inventory: Path) -> None:
    for path, host in (("/pi1/", VPS), ("/", "www.pi1.test")):
        status, _, body = request("GET", path, headers={"Host": host, "X-Forwarded-For": "6.6.6.6",
                                                        "X-Real-IP": "6.6.6.7"})
        assert status == 200
        seen = json.loads(body)
        forwarded = [v for k, v in seen["headers"] if k.lower() == "x-forwarded-for"]
        assert forwarded == [str(LAPTOP_ADDR)], (host, seen["headers"])  # the address Nginx saw, alone
        assert seen["x_real_ip"] == str(LAPTOP_ADDR)
        assert not [v for _, v in seen["headers"] if "6.6.6." in v], seen["headers"]


def test_server_header_has_no_version(inventory: Path) -> None:
    for path, host in (("/pi1/", VPS), ("/nothing-here", VPS), ("/", "www.pi1.test")):
        status, headers, body = request("GET", path, headers={"Host": host})
        assert headers.get("server") == "nginx", (path, host, headers)
    # an error page Nginx writes itself (413 below) names no version either
    status, headers, body = request("POST", "/pi1/", body=b"x" * 4096)
    assert status == 413 and b"nginx/" not in body and headers.get("server") == "nginx", (status, body)


def test_body_over_client_max_body_size_gets_413(inventory: Path) -> None:
    status, _, _ = request("POST", "/pi1/", body=b"x" * 2048)  # client_max_body_size: 1k
    assert status == 413
    status, _, body = request("POST", "/pi1/", body=b"x" * 1000)
    assert status == 200 and json.loads(body)["body_bytes"] == 1000
    # the default (10m) on the other routes: 2 KiB passes
    status, _, body = request("POST", "/", body=b"x" * 2048, headers={"Host": "www.pi1.test"})
    assert status == 200 and json.loads(body)["body_bytes"] == 2048


def test_files_named_the_old_way_are_pruned(inventory: Path) -> None:
    """A VPS provisioned before names were injective has PI-TUNNEL files: a rerun leaves only PI_TUNNEL."""
    in_host("vps", f"cp {LOCATIONS}/pi1_api.conf {LOCATIONS}/pi1-api.conf; "
                   f"cp {LOCATIONS}/pi1_ws.conf {LOCATIONS}/pi1-ws.conf; "
                   f"cp {SITES}/pitunnel-pi1_www.conf {SITES}/pitunnel-pi1-www.conf; "
                   f"echo 'alice:x' > {AUTH}/pi1-api.htpasswd")
    code, p = play(inventory, provision_site)
    assert code == 0 and p is not None and recap(p)["vps"][0] > 0, p and recap(p)
    assert in_host("vps", f"ls {LOCATIONS}").split() == ["pi1_api.conf", "pi1_ws.conf"]
    assert in_host("vps", f"ls {SITES}").split() == ["pitunnel-pi1_www.conf", "pitunnel.conf"]
    assert in_host("vps", f"ls {AUTH}").split() == []
    assert "test is successful" in in_host("vps", "nginx -t 2>&1")
    assert request("GET", "/pi1/")[0] == 200
    code, p = play(inventory, provision_site)
    assert code == 0 and p is not None and all(changed == 0 for changed, _ in recap(p).values()), p and recap(p)
