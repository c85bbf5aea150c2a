#!/usr/bin/python3
"""Stand-in for "the Pi's API": answers every GET with JSON naming this Pi and echoing the request's
headers; POST also counts the body's bytes; `?sleep=N` answers after N seconds; a WebSocket
handshake (any path) gets 101 and an echo of every text frame until the client closes."""
import base64
import hashlib
import json
import socket
import struct
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOSTNAME = socket.gethostname()
MACHINE_ID = open("/etc/machine-id").read().strip()
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffer the response and send it in one write (flushed after each request). Unbuffered, the
    # headers and the body left in two small writes, and Nagle held the body back until the client's
    # delayed ACK of the headers: every keep-alive request took 40 ms (23 requests/s on one connection).
    wbufsize = -1

    def do_GET(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket" and self.headers.get("Sec-WebSocket-Key"):
            self.websocket()
            return
        self.answer({})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.answer({"body_bytes": len(self.rfile.read(length))})

    def answer(self, extra: dict) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if "sleep" in query:
            time.sleep(float(query["sleep"][0]))
        body = json.dumps({
            "pi": HOSTNAME, "machine_id": MACHINE_ID, "path": self.path,
            "client": self.client_address[0],
            "x_forwarded_for": self.headers.get("X-Forwarded-For"),
            "x_real_ip": self.headers.get("X-Real-IP"),
            "x_forwarded_proto": self.headers.get("X-Forwarded-Proto"),
            "headers": [[name, value] for name, value in self.headers.items()],  # every line, in order
            **extra,
        }).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def websocket(self) -> None:
        key = self.headers["Sec-WebSocket-Key"].strip()
        accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while True:
            frame = self.read_frame()
            if frame is None:
                return
            opcode, payload = frame
            if opcode == 0x8:  # close: answer it, done
                self.send_frame(0x8, payload[:2])
                return
            if opcode == 0x9:  # ping
                self.send_frame(0xA, payload)
            elif opcode in (0x1, 0x2):  # text, binary: echo
                self.send_frame(opcode, payload)

    def read_frame(self) -> tuple[int, bytes] | None:
        head = self.rfile.read(2)
        if len(head) < 2:
            return None
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", self.rfile.read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self.rfile.read(8))[0]
        mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = self.rfile.read(length)
        return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))

    def send_frame(self, opcode: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, length)
        elif length < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, length)
        self.wfile.write(head + payload)  # one write per frame
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    # socketserver's default accept queue holds 5 connections: a burst of new connections (Nginx
    # opening upstreams through the tunnel) overflowed it, and each dropped SYN cost its request a
    # 1 s retransmit. Real API servers listen with 128 or more.
    request_queue_size = 128


Server(("0.0.0.0", 80), Handler).serve_forever()
