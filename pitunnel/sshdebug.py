"""`-vv`: the SSH handshake and each login attempt, from paramiko's own DEBUG logging, filtered to the lines
that say how a connection went (versions, the algorithms agreed, each key or password tried and its answer)
and with every secret masked: the run's passwords and passphrases are replaced wherever they appear, and
key material (a PEM block, a long base64 run) never reaches the terminal."""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TextIO

MASK = "********"
NOISE = ("kex algos", "server key", "client encrypt", "server encrypt", "client mac", "server mac", "client compress",
         "server compress", "client lang", "server lang", "kex follows", "=== ", "[chan ", "Switch to new keys",
         "Switching on", "Got EXT_INFO", "Sending global request", "Received global request", "Global request",
         "Secsh channel", "EOF in transport thread", "Debug msg", "starting thread", "Resetting", "kex engine", "Rejecting")  # the lists before agreement, and channel traffic
PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*-----.*?(-----END [A-Z0-9 ]*-----|$)", re.S)
BLOB = re.compile(r"[A-Za-z0-9+/]{60,}={0,2}")  # key material or any long encoded secret (a fingerprint is 43)

_secrets: set[str] = set()
_lock = threading.Lock()
CURRENT = threading.local()  # .host: the host a worker thread works on (pitunnel.play), for lines logged there


def secret(value: str | bytes | None) -> None:
    """Remember a password or passphrase of this run: it is masked in every line -vv prints."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    if text:
        with _lock:
            _secrets.add(text)


def masked(text: str) -> str:
    text = PEM.sub(f"(key material: {MASK})", text)
    text = BLOB.sub(MASK, text)
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for value in known:
        text = text.replace(value, MASK)
    return text


class Handshake(logging.Handler):
    """Prints paramiko's handshake and login lines, each prefixed by the host it is about (by the peer's
    address and port, as the inventory names it) and masked."""

    def __init__(self, out: Callable[[], TextIO], hosts: Mapping[tuple[str, int], str]) -> None:
        super().__init__(logging.DEBUG)
        self.out = out
        self.hosts = dict(hosts)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is not worth a traceback
            return
        if text.startswith(NOISE):
            return
        line = f"{'ssh':<12} {self._host():<10} {masked(text)}"
        print(line, file=self.out(), flush=True)

    def _host(self) -> str:
        """The host of the transport thread logging, else the host whose worker logs (a login runs there)."""
        thread = threading.current_thread()
        peer = getattr(thread, "getpeername", None)
        try:
            address, port = peer()[:2] if callable(peer) else ("", 0)
        except (OSError, AttributeError, TypeError, ValueError):
            address, port = "", 0
        if (address, port) in self.hosts:
            return self.hosts[(address, port)]
        return f"{address}:{port}" if address else str(getattr(CURRENT, "host", "-"))


_installed: list[Handshake] = []


def enable(hosts: Mapping[tuple[str, int], str], out: Callable[[], TextIO] = lambda: sys.stderr) -> None:
    """Show the handshake and login lines of every connection from now on (once per process: a second call
    only adds hosts)."""
    logger = logging.getLogger("paramiko")
    if _installed:
        _installed[0].hosts.update(hosts)
        return
    handler = Handshake(out, hosts)
    _installed.append(handler)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def disable() -> None:
    logger = logging.getLogger("paramiko")
    for handler in _installed:
        logger.removeHandler(handler)
    _installed.clear()
    logger.setLevel(logging.NOTSET)
