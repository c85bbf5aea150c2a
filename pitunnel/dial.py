"""A connection's first leg: a TCP connection dialled in short slices, so Ctrl-C ends it at once (the run's STOP),
or a channel through an open SSH connection; and the sockets of logins in flight, closed on Ctrl-C. Each failure
is Unreachable, in one line. How a whole login is opened is link.py's."""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import paramiko
from fabric import Connection

from . import failures

STOP = threading.Event()  # set on Ctrl-C (pitunnel.taskkit.ctrl_c): no new connection, no new step
SLICE = 0.2  # seconds a dial waits between two looks at STOP
INTERRUPTED = "not reached: interrupted (Ctrl-C)"
_IN_FLIGHT: set[socket.socket | paramiko.Channel] = set()  # the sockets of logins not finished yet


class Unreachable(Exception):
    """The host could not be reached or logged in to; the message says why and what to try."""


def tcp(host: str, port: int, timeout: float, where: str) -> socket.socket:
    """A TCP connection to host:port within `timeout` seconds; Unreachable if there is none. A refusal fails at
    once: where a port is expected back soon (sshd re-executing on reload, a tunnel restarting), the caller
    retries the whole login (Link.can_log_in_fresh, Link.connection after path_restarts)."""
    if STOP.is_set():
        raise Unreachable(f"{where}: {INTERRUPTED}")
    deadline = time.monotonic() + timeout
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        last: OSError = OSError(errno.EHOSTUNREACH, os.strerror(errno.EHOSTUNREACH))
        for family, kind, proto, _, address in found:
            sock = socket.socket(family, kind, proto)
            try:
                _connect(sock, address, deadline, where)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            except BaseException:
                sock.close()
                raise
            sock.settimeout(timeout)
            return sock
        raise last
    except OSError as exc:  # no answer, refused, no route, name not known
        raise Unreachable(failures.socket_failure(exc, where, host, port, timeout)
                          or f"{where}: {exc.strerror or exc}") from None


def _connect(sock: socket.socket, address: tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes],
             deadline: float, where: str) -> None:
    """Connect `sock`, looking at STOP every SLICE seconds; socket.timeout at `deadline`."""
    sock.setblocking(False)
    code = sock.connect_ex(address)
    while code in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
        if STOP.is_set():
            raise Unreachable(f"{where}: {INTERRUPTED}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        if select.select([], [sock], [], min(SLICE, left))[1]:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))  # its subclass: ConnectionRefusedError for ECONNREFUSED


def channel(conn: Connection, host: str, port: int, timeout: float, where: str, *, hint: str = "") -> paramiko.Channel:
    """A direct-tcpip channel from `conn`'s host to host:port (what ssh -J and -W use)."""
    transport = conn.client.get_transport()
    try:
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("connection lost")
        return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        reason = exc.text if isinstance(exc, paramiko.ChannelException) else str(exc) or type(exc).__name__
        raise Unreachable(f"{where}: {reason}" + (f"; {hint}" if hint else "")) from None


@contextmanager
def closed_on_stop(sock: socket.socket | paramiko.Channel, where: str) -> Iterator[None]:
    """A login over `sock` in the `with` block: Ctrl-C (abandon_logins) closes `sock`, which ends the login at
    once (its SSH handshake would wait up to connect_timeout); that failure says it was interrupted."""
    _IN_FLIGHT.add(sock)
    try:
        if STOP.is_set():
            raise Unreachable(f"{where}: {INTERRUPTED}")
        yield
    except Exception:
        if STOP.is_set():
            raise Unreachable(f"{where}: {INTERRUPTED}") from None
        raise
    finally:
        _IN_FLIGHT.discard(sock)


def abandon_logins() -> None:
    """Close the socket of every login in flight (on Ctrl-C, after STOP is set)."""
    for sock in list(_IN_FLIGHT):  # a copy: logins end and leave the set meanwhile
        sock.close()
