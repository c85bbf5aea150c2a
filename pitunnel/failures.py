"""Why a connection failed, in one line with the next step: the network, auth and protocol errors of
paramiko and the socket layer, mapped for the user (no traceback ever reaches them), and the exit codes
a run ends with (docs/cli.md)."""

from __future__ import annotations

import errno
import logging
import socket

import paramiko

from .inventory import HostSpec

# exit codes (docs/cli.md): bits for hosts, so a run with both a failed and an unreachable host exits 6
OK = 0
FAILED = 2  # a host failed (a step, a verify check, a tunnel down in status)
UNREACHABLE = 4  # a host could not be reached or logged in to
USAGE = 3  # nothing was touched: the inventory or the command line is wrong (no inventory, bad --limit)
INTERRUPTED = 130  # Ctrl-C (SIGINT), the shell's 128 + 2
CLOSED_PIPE = 141  # stdout's reader went away (`| head`): the shell's 128 + 13 (SIGPIPE), as for `ls | head`

PI_USER_HINT = ("current Raspberry Pi OS images have no `pi` user: set `user:` of this Pi in the inventory to the "
                "user you chose in Raspberry Pi Imager")


def exit_code(*, failed: bool, unreachable: bool) -> int:
    return (FAILED if failed else 0) | (UNREACHABLE if unreachable else 0)


def silence_paramiko() -> None:
    """paramiko's transport thread logs its own errors (with tracebacks) to stderr through Python's last-resort
    handler; every one of them reaches the user as a mapped line instead."""
    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


def login_refused(spec: HostSpec, where: str) -> str:
    hint = "set key (or password_file, or --prompt-for-login-password) in the inventory"
    if spec.role == "pi" and spec.user == "pi":
        hint = f"{PI_USER_HINT}; or {hint}"
    return f"{where}: login refused ({hint})"


def not_connected(exc: BaseException, spec: HostSpec, where: str, *, address: str | None = None,
                  port: int | None = None, waited: float = 0.0) -> str:
    """One line: what went wrong reaching `where` (user@address:port), and what to try. `address` and `port`
    are where the connection went, when an ssh config moved it from the inventory's; `waited`: seconds the
    login waited before it failed."""
    address, port = address or spec.address, port or spec.port
    if isinstance(exc, paramiko.AuthenticationException):
        return login_refused(spec, where)
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        codes = {getattr(e, "errno", None) for e in exc.errors.values()}
        if codes <= {errno.ECONNREFUSED}:
            return refused(where, port)
        return (f"{where}: no route to host (is `address:` right, and is the host on and on this network?)")
    found = socket_failure(exc, where, address, port, spec.connect_timeout)
    if found:
        return found
    if isinstance(exc, paramiko.SSHException) and any(
            s in str(exc) for s in ("banner", "protocol version", "No existing session")):
        # a web server answers our greeting at once (400, then closes); a port silent for the whole wait is not
        # asked again (that cost 3 s more than the timeout the message names)
        if waited < spec.connect_timeout and speaks_http(address, port, timeout=min(3.0, spec.connect_timeout)):
            return (f"{where}: port {port} speaks HTTP, not SSH: `port:` must be the host's sshd port "
                    "(a web server answers there)")
        return (f"{where}: no SSH handshake with port {port} within {spec.connect_timeout:g}s: is it an SSH server? "
                "(check `port:`)")
    if isinstance(exc, (ConnectionResetError, EOFError)):
        return f"{where}: the connection was closed before login (sshd refused us: MaxStartups, a firewall or fail2ban?)"
    text = str(exc).strip() or type(exc).__name__
    return f"{where}: {text}"


def refused(where: str, port: int) -> str:
    return (f"{where}: connection refused: nothing listens on port {port} (is `port:` the host's sshd port, "
            "and is sshd running?)")


def socket_failure(exc: BaseException, where: str, address: str, port: int, timeout: float) -> str | None:
    """The line for a failure to open the TCP connection itself, or None if `exc` is not one."""
    if isinstance(exc, ConnectionRefusedError):
        return refused(where, port)
    if isinstance(exc, socket.gaierror):
        return f"{where}: cannot resolve {address!r} ({exc.strerror}): check `address:` in the inventory"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return (f"{where}: no answer within {timeout:g}s: the host is off, the address is wrong, or a "
                "firewall drops the packets (raise `connect_timeout:` for a slow link)")
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"{where}: no route to host (is `address:` right, and is the host on and on this network?)"
    return None


def speaks_http(address: str, port: int, timeout: float = 3.0) -> bool:
    """Does the port answer like a web server? Asked only after SSH's greeting failed."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/")
    except OSError:
        return False
