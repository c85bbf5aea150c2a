"""One SSH connection per host for a whole run, and the one way we run things there: a script on stdin.

A script never appears on a command line (so not in `ps`), and a sudo password travels on
stdin ahead of it, read by `sudo -S` itself. Every call is one round trip, and is counted. How the
connection is opened (the path, the jump hosts, the login, the host keys) is link.py's.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import paramiko

from . import sshconf
from .inventory import Inventory, PiSpec
from .link import Credentials, Link, Unanswered, Unreachable
from .sshauth import KeyRing

__all__ = ["Credentials", "HostCannotRun", "Remote", "Result", "SudoRefused", "Unreachable", "remotes_for"]

SENTINEL = "@@PITUNNEL-SCRIPT@@"
NO_SPOOL = "@@PITUNNEL-NO-SPOOL@@"  # the receiver's last line on stderr when the host could not store the script
NO_SPOOL_RC = 125
# reads up to the sentinel (so a password line sudo did not need is dropped, never run),
# spools the script to a private temp file, and runs it with no stdin of its own; a host that cannot spool it
# (a read-only or full /tmp) says so after its own error, and runs nothing
RECEIVER = (
    f"while IFS= read -r l; do [ \"$l\" = '{SENTINEL}' ] && break; done; "
    f"t=$(mktemp) && cat >\"$t\" || {{ rm -f \"$t\"; echo '{NO_SPOOL}' >&2; exit {NO_SPOOL_RC}; }}; "
    "sh \"$t\" </dev/null; rc=$?; rm -f \"$t\"; exit $rc"
)


class SudoRefused(Exception):
    """sudo asked for a password and did not accept the one we have (or we have none)."""


class HostCannotRun(Exception):
    """The host could not run our script at all (its shell could not store it: a read-only filesystem, a full
    /tmp): the host's own fault, said with its own error and a hint, never a pitunnel bug."""

    def __init__(self, host: str, error: str, what: str = "cannot run a script") -> None:
        tail = " ".join(error.strip().splitlines()[-2:])[-300:] or "no error output"  # the host's own words
        super().__init__(f"{host} {what}: {tail} (is / read-only or /tmp full on {host}?)")


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclass
class Remote(Link):
    """A host's connection (Link) that runs scripts there, counting each round trip."""

    round_trips: int = 0
    echo: Callable[[str], None] | None = field(default=None, repr=False)  # -v: each line of remote output

    def run(self, script: str, *, sudo: bool = True, timeout: float = 600,
            mask: Callable[[str], str | None] | None = None) -> Result:
        """Run a shell script on the host, as root unless sudo=False. One round trip. `mask`: what -v shows of
        each line of output (None: not that line), for output that holds a secret (facts.masked)."""
        need_sudo = sudo and self.spec.user != "root"
        command = f"sh -c {_quote(RECEIVER)}"
        preamble = ""
        if need_sudo:
            command = f"sudo -k -S -p '' {command}" if self.credentials.sudo_password else f"sudo -n {command}"
            if self.credentials.sudo_password:
                preamble = self.credentials.sudo_password + "\n"
        data = (preamble + SENTINEL + "\n" + script).encode()
        with self._lock:
            self.round_trips += 1
            transport = self.connection().client.get_transport()
            if transport is None or not transport.is_active():
                self.close()
                transport = self.connection().client.get_transport()
            assert transport is not None
            try:
                chan = transport.open_session(timeout=30)
                chan.settimeout(timeout)
                chan.exec_command(command)
                chan.sendall(data)
                chan.shutdown_write()
                stdout, stderr = _drain(chan, _masked(self.echo, mask), deadline=time.monotonic() + timeout)
                rc = chan.recv_exit_status()
            except ScriptTimeout:
                chan.close()
                raise Unreachable(f"{self.name}: no end to its script within {timeout:g}s (a command hung, or the "
                                  "connection did)") from None
            except (paramiko.SSHException, OSError, socket.timeout) as exc:
                raise Unreachable(f"{self.name}: connection lost: {str(exc) or type(exc).__name__}") from None
        result = Result(rc, stdout, stderr)
        if need_sudo and rc != 0 and _sudo_refused(stderr):
            how = "the sudo password was not accepted" if self.credentials.sudo_password else \
                "sudo wants a password: set sudo_password_file in the inventory or pass --prompt-for-sudo-password"
            raise SudoRefused(f"{self.name}: {how}")
        if rc == NO_SPOOL_RC and stderr.rstrip().endswith(NO_SPOOL):
            raise HostCannotRun(self.name, stderr.rstrip()[:-len(NO_SPOOL)])
        return result


def remotes_for(inv: Inventory, credentials: Mapping[str, Credentials], *, accept_new: bool) -> dict[str, Remote]:
    """A Remote per host of `inv`, each with its route (the inventory, then the ssh config it names), its
    Pi's VPS as the way to its tunnel, one key ring and one memory of the jump hosts out of reach for the run. Raises sshconf.BadSshConfig."""
    config = sshconf.load(inv.settings.ssh_config)
    ring, unanswered = KeyRing(), Unanswered()
    remotes: dict[str, Remote] = {}
    for host in inv.hosts():  # VPSes first: a Pi's tunnel starts at its VPS's connection
        gateway = remotes.get(host.first_vps) if isinstance(host, PiSpec) else None
        route = sshconf.resolve(host, config)
        moved = [f"{s} {getattr(route.target, s)}" for s in ("hostname", "port")
                 if route.target.sources.get(s) == sshconf.SSH_CONFIG]
        if not isinstance(host, PiSpec) and moved:  # the Pis' tunnels go to the inventory's address and port
            raise sshconf.BadSshConfig(
                f"the ssh config gives the VPS {host.name} {' and '.join(moved)}, but its Pis' tunnels connect to "
                f"the inventory's address and port ({host.address}:{host.port}): write them in the inventory")
        remotes[host.name] = Remote(host, inv.settings.known_hosts, credentials[host.name],
                                    accept_new_host_keys=accept_new, route=route, gateway=gateway, keys=ring,
                                    unanswered=unanswered)
    return remotes


def _masked(echo: Callable[[str], None] | None, mask: Callable[[str], str | None] | None) -> Callable[[str], None] | None:
    """`echo`, each line first through `mask`."""
    if echo is None or mask is None:
        return echo

    def shown(line: str) -> None:
        text = mask(line)
        if text is not None:
            echo(text)

    return shown


class ScriptTimeout(Exception):
    """A script still ran (or its connection hung) at the run's deadline."""


def _drain(chan: paramiko.Channel, echo: Callable[[str], None] | None = None, *,
           deadline: float | None = None) -> tuple[str, str]:
    """Read stdout and stderr until the command ends, never blocking on one while the other fills;
    `echo` gets each whole line of either as it arrives. Past `deadline` (time.monotonic()): ScriptTimeout."""
    out, err = bytearray(), bytearray()
    shown = [0, 0]
    while True:
        if deadline is not None and time.monotonic() > deadline:
            raise ScriptTimeout()
        busy = False
        while chan.recv_ready():
            out += chan.recv(65536)
            busy = True
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
            busy = True
        if echo is not None and busy:
            for index, buf in enumerate((out, err)):
                end = buf.rfind(b"\n") + 1
                if end > shown[index]:
                    for line in buf[shown[index]:end].decode(errors="replace").splitlines():
                        echo(line)
                    shown[index] = end
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            if chan.eof_received or chan.closed:
                break
        if not busy:
            select.select([chan], [], [], 0.5)
    if echo is not None:  # a last line without its newline
        for index, buf in enumerate((out, err)):
            for line in buf[shown[index]:].decode(errors="replace").splitlines():
                echo(line)
    return out.decode(errors="replace"), err.decode(errors="replace")


def _sudo_refused(stderr: str) -> bool:
    return any(s in stderr for s in ("a password is required", "incorrect password attempt",
                                     "Sorry, try again", "a terminal is required"))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
