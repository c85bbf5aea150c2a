#!/usr/bin/python3
"""Stand-in for "the Pi's API": answers every GET with JSON naming this Pi."""
import json
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOSTNAME = socket.gethostname()
MACHINE_ID = open("/etc/machine-id").read().strip()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffer the response and send it in one write (flushed after each request). Unbuffered, the
    # headers and the body left in two small writes, and Nagle held the body back until the client's
    # delayed ACK of the headers: every keep-alive request took 40 ms (23 requests/s on one connection).
    wbufsize = -1

    def do_GET(self) -> None:
        body = json.dumps({
            "pi": HOSTNAME, "machine_id": MACHINE_ID, "path": self.path,
            "client": self.client_address[0],
            "x_forwarded_for": self.headers.get("X-Forwarded-For"),
            "x_real_ip": self.headers.get("X-Real-IP"),
            "x_forwarded_proto": self.headers.get("X-Forwarded-Proto"),
        }).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    # socketserver's default accept queue holds 5 connections: a burst of new connections (Nginx
    # opening upstreams through the tunnel) overflowed it, and each dropped SYN cost its request a
    # 1 s retransmit. Real API servers listen with 128 or more.
    request_queue_size = 128


Server(("0.0.0.0", 80), Handler).serve_forever()
