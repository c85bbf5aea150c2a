"""One SSH connection per host for a whole run, and the one way we run things there: a script on stdin.

A script never appears on a command line (so not in `ps`), and a sudo password travels on
stdin ahead of it, read by `sudo -S` itself. Every call is one round trip, and is counted.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from fabric import Config, Connection

from . import hostkeys
from .inventory import HostSpec

SENTINEL = "@@PITUNNEL-SCRIPT@@"
# reads up to the sentinel (so a password line sudo did not need is dropped, never run),
# spools the script to a private temp file, and runs it with no stdin of its own
RECEIVER = (
    f"while IFS= read -r l; do [ \"$l\" = '{SENTINEL}' ] && break; done; "
    "t=$(mktemp) && cat >\"$t\" && sh \"$t\" </dev/null; rc=$?; rm -f \"$t\"; exit $rc"
)


class Unreachable(Exception):
    """The host could not be reached or logged in to; the message says why and what to try."""


class SudoRefused(Exception):
    """sudo asked for a password and did not accept the one we have (or we have none)."""


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclass
class Credentials:
    """Secrets for a host, read from files or prompts; never logged, never on a command line."""

    login_password: str | None = field(default=None, repr=False)
    sudo_password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # whether each is set, never what it is (a repr ends up in tracebacks and logs)
        shown = {name: "None" if value is None else "<hidden>"
                 for name, value in (("login_password", self.login_password), ("sudo_password", self.sudo_password))}
        return "Credentials(" + ", ".join(f"{name}={value}" for name, value in shown.items()) + ")"


@dataclass
class Remote:
    spec: HostSpec
    known_hosts: Path
    credentials: Credentials = field(default_factory=Credentials)
    accept_new_host_keys: bool = False
    accept_changed_host_key: str = ""  # SHA256:... the user read on the host's console: that changed key is taken
    on_change: Callable[[str, str, str, str], None] | None = field(default=None, repr=False)  # Reporter.line
    round_trips: int = 0
    _conn: Connection | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def connection(self) -> Connection:
        """The open Fabric connection (opened on first use, checked against known host keys)."""
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _connect_kwargs(self, *, use_password: bool = True) -> dict[str, object]:
        kwargs: dict[str, object] = {"allow_agent": False, "look_for_keys": False,
                                     "banner_timeout": self.spec.connect_timeout,
                                     "auth_timeout": self.spec.connect_timeout}
        if self.spec.key is not None:
            kwargs["key_filename"] = str(self.spec.key)
        if use_password and self.credentials.login_password:
            kwargs["password"] = self.credentials.login_password
        return kwargs

    def _open(self, *, use_password: bool = True, pinned: str | None = None) -> Connection:
        # an explicit, empty ssh config: the inventory alone says where and how to connect
        conn = Connection(self.spec.address, user=self.spec.user, port=self.spec.port,
                          config=Config(ssh_config=paramiko.SSHConfig()),
                          connect_timeout=int(self.spec.connect_timeout),
                          connect_kwargs=self._connect_kwargs(use_password=use_password))
        name = hostkeys.known_name(self.spec.address, self.spec.port)
        hostkeys.configure(conn.client, known_hosts=self.known_hosts, name=name,
                           pinned=pinned or self.spec.host_key, accept_new=self.accept_new_host_keys)
        where = f"{self.spec.user}@{self.spec.address}:{self.spec.port}"
        try:
            _open_retrying_refused(conn)
        except hostkeys.HostKeyRefused:
            raise
        except paramiko.BadHostKeyException as exc:
            if pinned or self.spec.host_key:
                raise self._changed(where, exc) from None
            line = f"{exc.key.get_name()} {exc.key.get_base64()}"
            if hostkeys.listed(self.known_hosts, name, exc.key):
                # another of its known keys (paramiko checks only the first of each type; OpenSSH takes any)
                return self._open(use_password=use_password, pinned=line)
            taken = self._changed_key_accepted(exc.key)
            if taken is not None:
                line = f"{taken.get_name()} {taken.get_base64()}"
                hostkeys.rewrite(self.known_hosts, name, keep=lambda _: False, add=[line])
                if self.on_change:
                    self.on_change(self.name, "changed", f"host key in {self.known_hosts}",
                                   f"now {taken.get_name()} {self.accept_changed_host_key} (--accept-changed-host-key); "
                                   f"the old keys of {name} removed")
                return self._open(use_password=use_password, pinned=line)
            raise self._changed(where, exc) from None
        except paramiko.AuthenticationException:
            hint = "set key (or password_file, or --prompt-for-login-password) in the inventory"
            raise Unreachable(f"{where}: login refused ({hint})") from None
        except (OSError, socket.timeout, paramiko.SSHException, EOFError) as exc:
            raise Unreachable(f"{where}: {exc or type(exc).__name__}") from None
        return conn

    def _changed_key_accepted(self, key: paramiko.PKey) -> paramiko.PKey | None:
        """The host's new key the user vouched for with --accept-changed-host-key: the one it showed, or
        another of its keys (the fingerprint read on the console may be of another type)."""
        if not self.accept_changed_host_key:
            return None
        if hostkeys.fingerprint(key) == self.accept_changed_host_key:
            return key
        return hostkeys.offered(self.spec.address, self.spec.port, self.accept_changed_host_key,
                                self.spec.connect_timeout)

    def _changed(self, where: str, exc: paramiko.BadHostKeyException) -> hostkeys.HostKeyRefused:
        got = hostkeys.fingerprint(exc.key)
        if self.accept_changed_host_key and not self.spec.host_key:
            return hostkeys.HostKeyRefused(
                f"host key for {where} CHANGED to {exc.key.get_name()} {got}, and none of its keys is the "
                f"--accept-changed-host-key {self.accept_changed_host_key}: refused, known_hosts unchanged. Read the "
                "fingerprint again on the provider's console (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub)")
        fix = (f"update host_key of {self.name} in the inventory" if self.spec.host_key else
               f"check the new key's fingerprint on the host's console (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) "
               f"and rerun with --accept-changed-host-key {got} if it is the same, or remove its old line from "
               f"{self.known_hosts} (ssh-keygen -R) (docs/troubleshooting.md)")
        return hostkeys.HostKeyRefused(
            f"host key for {where} CHANGED: got {exc.key.get_name()} {got}, expected "
            f"{hostkeys.fingerprint(exc.expected_key)}. This may be an attack; if the host was really reinstalled, {fix}")

    def can_log_in_fresh(self, *, use_password: bool = True, within: float = 10) -> bool:
        """Open a brand-new login (not the one we hold) and run `true`: is the host still letting us in?
        Retried for `within` seconds: sshd re-executes itself on reload and refuses for a moment."""
        deadline = time.monotonic() + within
        while True:
            if self._try_login(use_password):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.3)

    def _try_login(self, use_password: bool) -> bool:
        try:
            conn = self._open(use_password=use_password)
        except (Unreachable, hostkeys.HostKeyRefused):
            return False
        try:
            chan = conn.client.get_transport().open_session(timeout=10)  # type: ignore[union-attr]
            chan.exec_command("true")
            return chan.recv_exit_status() == 0
        except (paramiko.SSHException, OSError):
            return False
        finally:
            conn.close()

    def run(self, script: str, *, sudo: bool = True, timeout: float = 600) -> Result:
        """Run a shell script on the host, as root unless sudo=False. One round trip."""
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
                self._conn = None
                transport = self.connection().client.get_transport()
            assert transport is not None
            try:
                chan = transport.open_session(timeout=30)
                chan.settimeout(timeout)
                chan.exec_command(command)
                chan.sendall(data)
                chan.shutdown_write()
                stdout, stderr = _drain(chan)
                rc = chan.recv_exit_status()
            except (paramiko.SSHException, OSError, socket.timeout) as exc:
                raise Unreachable(f"{self.name}: connection lost: {exc or type(exc).__name__}") from None
        result = Result(rc, stdout, stderr)
        if need_sudo and rc != 0 and _sudo_refused(stderr):
            how = "the sudo password was not accepted" if self.credentials.sudo_password else \
                "sudo wants a password: set sudo_password_file in the inventory or pass --prompt-for-sudo-password"
            raise SudoRefused(f"{self.name}: {how}")
        return result

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _open_retrying_refused(conn: Connection, within: float = 3.0) -> None:
    """Open, retrying while the port refuses: sshd refuses for a moment while it re-executes on reload."""
    deadline = time.monotonic() + within
    while True:
        try:
            conn.open()
            return
        except paramiko.ssh_exception.NoValidConnectionsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _drain(chan: paramiko.Channel) -> tuple[str, str]:
    """Read stdout and stderr until the command ends, never blocking on one while the other fills."""
    out, err = bytearray(), bytearray()
    while True:
        busy = False
        while chan.recv_ready():
            out += chan.recv(65536)
            busy = True
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
            busy = True
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            if chan.eof_received or chan.closed:
                break
        if not busy:
            select.select([chan], [], [], 0.5)
    return out.decode(errors="replace"), err.decode(errors="replace")


def _sudo_refused(stderr: str) -> bool:
    return any(s in stderr for s in ("a password is required", "incorrect password attempt",
                                     "Sorry, try again", "a terminal is required"))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
