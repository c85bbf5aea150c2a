"""A host's SSH connection and how it is opened: a socket to its address, through the ssh config's ProxyJump
hops, or through its VPS to its own ssh tunnel (`via`); the login over it, every hop's host key checked under
its own name; and brand-new logins that prove a way in still works (after an sshd reload, or with one key
alone). Running things on the host is remote.py's job (Remote, a Link that runs scripts).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import paramiko
from fabric import Config, Connection

from . import failures, hostkeys, sshauth, sshconf
from .dial import INTERRUPTED, STOP, Unreachable, channel, closed_on_stop, tcp
from .inventory import HostSpec, PiSpec
from .sshauth import KeyRing, Login

__all__ = ["Credentials", "Link", "LoginRefused", "Unanswered", "Unreachable"]


class _TryPinned(Exception):
    """Log in again expecting this host key (`type base64`): one known_hosts lists for the host besides the
    one paramiko expected, or the changed key the user vouched for with --accept-changed-host-key."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


class LoginRefused(Unreachable):
    """The host answered with the right host key and refused every way we have of logging in."""


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
class Unanswered:
    """The jump hosts this run could not reach, and why, shared by the run's links: each is dialled once, and
    every host behind it fails at once with the same reason. Until a first login through one worked, its
    logins wait for each other; then they run side by side."""

    _why: dict[str, Exception] = field(default_factory=dict)
    _reached: set[str] = field(default_factory=set)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def once(self, where: str) -> Iterator[None]:
        """The `with` block dials `where`, unless this run could not reach it already (then it raises why)."""
        if where in self._reached:
            yield
            return
        with self._lock:
            lock = self._locks.setdefault(where, threading.Lock())
        with lock:
            if where in self._why:
                raise type(self._why[where])(str(self._why[where]))
            try:
                yield
            except (Unreachable, hostkeys.HostKeyRefused) as exc:
                self._why[where] = exc
                raise
            self._reached.add(where)


@dataclass
class Link:
    """A host's SSH connection for the whole run, opened on first use: on the path this run chose, through
    its jump hosts, every host key checked; and brand-new logins that prove access is still there."""

    spec: HostSpec
    known_hosts: Path
    credentials: Credentials = field(default_factory=Credentials)
    accept_new_host_keys: bool = False
    accept_changed_host_key: str = ""  # SHA256:... the user read on the host's console: that changed key is taken
    on_change: Callable[[str, str, str, str], None] | None = field(default=None, repr=False)  # Reporter.line
    route: sshconf.Route | None = None  # where and as whom (None: the inventory's settings alone)
    gateway: "Link | None" = None  # a Pi's VPS, whose connection reaches the Pi's ssh tunnel
    keys: KeyRing = field(default_factory=KeyRing, repr=False)  # the run's key files, each asked for once
    unanswered: Unanswered = field(default_factory=Unanswered, repr=False)  # the run's jump hosts out of reach
    notify: Callable[[str], None] = field(default=lambda text: None, repr=False)  # a line for the user
    busy: Callable[[str], AbstractContextManager[None]] = field(  # Reporter.busy for this host: the heartbeat
        default=lambda step: nullcontext(), repr=False)
    path: str | None = None  # "direct" or "tunnel", once the first connection chose (kept for the run)
    _conn: Connection | None = field(default=None, repr=False)
    _hops: list[Connection] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _open_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _reopen_until: float = 0.0  # after a restart of the path under us: keep trying to open until then
    _failed: Exception | None = field(default=None, repr=False)  # why this run could not open it: not tried again

    def __post_init__(self) -> None:
        if self.route is None:
            self.route = sshconf.resolve(self.spec, None)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def via(self) -> str:
        """How this host is reached: "direct", "tunnel" or "auto" (a Pi's `via`, if it has an ssh tunnel)."""
        if not isinstance(self.spec, PiSpec) or self.gateway is None or self.spec.first_path.ssh_tunnel is None:
            return "direct"
        return self.spec.via

    @property
    def gateway_name(self) -> str:
        return self.gateway.name if self.gateway is not None else "-"

    @property
    def target(self) -> sshconf.Hop:
        assert self.route is not None
        return self.route.target

    def describe(self) -> list[str]:
        """Each connection setting and where it came from (for -v)."""
        assert self.route is not None
        lines = self.route.describe()
        if isinstance(self.spec, PiSpec):
            source = sshconf.INVENTORY if "via" in self.spec.given else sshconf.DEFAULT
            through = self.spec.first_path
            tunnel = through.ssh_tunnel
            jump = f"through {through.vps} to its tunnel at 127.0.0.1:{tunnel.remote_port}" if tunnel else ""
            lines.append(f"via {self.spec.via} ({source}): " + (
                "its address only, as it has no ssh tunnel" if not tunnel else
                {"direct": "its address only", "tunnel": jump}.get(self.spec.via, f"its address, else {jump}")))
        return lines

    @property
    def through_tunnel(self) -> bool:
        """Does this host's connection ride its own ssh tunnel (so restarting or stopping that cuts it)?"""
        return (self.path or self.via) == "tunnel"

    def connection(self) -> Connection:
        """The open Fabric connection (opened on first use, checked against known host keys). A host that could
        not be reached is tried once per run: every later use, and every Pi reached through it (its tunnel),
        fails at once with the same reason."""
        with self._open_lock:  # a VPS's connection is opened once, for all of its Pis reached through it
            while self._conn is None:
                if self._failed is not None:
                    raise type(self._failed)(str(self._failed))
                try:
                    with self.busy("connecting"):
                        self._conn, self._hops = self._open()
                except (Unreachable, hostkeys.HostKeyRefused) as exc:
                    if time.monotonic() > self._reopen_until or STOP.is_set():
                        self._failed = exc
                        raise
                    time.sleep(0.5)  # the path is coming back (a tunnel restarting under us)
            return self._conn

    def path_restarts(self, after: float, *, within: float) -> None:
        """The host restarts what our connection rides (its tunnel) `after` seconds from now: wait for that,
        drop the connection, and let the next use open a new one, retrying for `within` seconds."""
        time.sleep(after)
        with self._lock:
            self.close()
            self._reopen_until, self._failed = time.monotonic() + within, None

    def _open(self, *, use_password: bool = True, only: Path | None = None) -> tuple[Connection, list[Connection]]:
        """A new login, on the path this run chose (the first login chooses, for `via: auto`), with the
        jump hosts it goes through. `only`: the host itself is offered this key file alone."""
        password = self.credentials.login_password if use_password and only is None else None
        via = self.path or self.via
        if via != "auto":
            conn, hops = self._open_on(via, password, only=only)
        else:
            try:
                conn, hops = self._open_on(via := "direct", password, only=only)
            except LoginRefused:
                raise  # the host is there and said no: the tunnel leads to the same sshd
            except (Unreachable, hostkeys.HostKeyRefused) as direct:
                # no answer, or someone else at that address (another network's host): the Pi's own key is
                # demanded through the tunnel just the same, and nothing was sent to whoever answered
                try:
                    conn, hops = self._open_on(via := "tunnel", password, only=only)
                except (Unreachable, hostkeys.HostKeyRefused) as tunnel:
                    kind = type(direct) if isinstance(direct, hostkeys.HostKeyRefused) else type(tunnel)
                    raise kind(f"{direct}; and {tunnel}") from None
                self.notify(f"{direct}: reached through {self.gateway_name}'s tunnel instead")
        self.path = via
        return conn, hops

    def _open_on(self, via: str, password: str | None, pinned: str | None = None, *,
                 only: Path | None = None) -> tuple[Connection, list[Connection]]:
        """A new login on one path: "direct" (the address, or the ssh config's ProxyJump) or "tunnel"."""
        sock: socket.socket | paramiko.Channel
        hops: list[Connection] = []
        if via == "tunnel":
            sock = self._tunnel_socket()
        else:
            sock, hops = self._direct_socket()
        through = f" through {self.gateway_name}'s tunnel" if via == "tunnel" else ""
        try:
            with closed_on_stop(sock, self.target.where + through):  # Ctrl-C ends the handshake at once
                conn = self._login(self.target, sock, password, pinned=pinned or self.spec.host_key,
                                   through=through, only=only)
        except _TryPinned as again:  # another key known_hosts lists for it, or the one the user vouched for
            _close_all(hops)
            if pinned:
                raise
            return self._open_on(via, password, again.line, only=only)
        except BaseException:
            _close_all(hops)
            raise
        return conn, hops

    def _direct_socket(self) -> tuple[socket.socket | paramiko.Channel, list[Connection]]:
        """A socket to the host's address, or a channel to it through the ssh config's ProxyJump hops."""
        assert self.route is not None
        target, timeout = self.target, self.spec.connect_timeout
        if not self.route.jumps:
            return tcp(target.hostname, target.port, timeout, f"{target.where}"), []
        hops: list[Connection] = []
        first = self.route.jumps[0]
        try:
            with self.unanswered.once(first.where):  # one dial per run to a jump host that does not answer
                sock: socket.socket | paramiko.Channel = tcp(first.hostname, first.port, timeout,
                                                              f"jump host {first.where}")
                hops.append(self._login(first, sock, None, pinned=None, through=f" (jump host for {self.name})"))
            for hop, after in zip(self.route.jumps, [*self.route.jumps[1:], target]):
                if hop is not first:
                    hops.append(self._login(hop, sock, None, pinned=None, through=f" (jump host for {self.name})"))
                sock = channel(hops[-1], after.hostname, after.port, timeout,
                               f"{after.where} through jump host {hop.alias}")
        except BaseException:
            _close_all(hops)
            raise
        return sock, hops

    def _tunnel_socket(self) -> paramiko.Channel:
        """A channel through the Pi's VPS to the Pi's ssh tunnel there (its loopback listener; a public one
        listens there too)."""
        assert isinstance(self.spec, PiSpec) and self.gateway is not None
        tunnel = self.spec.first_path.ssh_tunnel
        assert tunnel is not None
        port = tunnel.remote_port
        where = f"{self.name} through {self.gateway_name}'s tunnel (127.0.0.1:{port} there)"
        try:
            vps = self.gateway.connection()
        except (Unreachable, hostkeys.HostKeyRefused) as exc:
            raise Unreachable(f"{where}: {exc}") from None
        return channel(vps, "127.0.0.1", port, self.spec.connect_timeout, where,
                        hint=f"is the tunnel up? (`pitunnel status`, or `systemctl status pitunnel` on {self.name})")

    def _login(self, hop: sshconf.Hop, sock: socket.socket | paramiko.Channel, password: str | None, *,
               pinned: str | None, through: str, only: Path | None = None) -> Connection:
        """Log in to `hop` over `sock`, its host key checked under its own name (never the name of the
        socket's far end: a jump to 127.0.0.1:PORT is checked as the host it should reach). `only`: offer
        this key file alone (no agent, no other key, no password)."""
        key_host, key_port = (hop.host_key_alias, 22) if hop.host_key_alias else (hop.hostname, hop.port)
        login = Login(hop, self.keys, password) if only is None else \
            Login(replace(hop, identities=(sshconf.Identity(only, sshconf.INVENTORY),), identities_only=True),
                  self.keys, None, agent=False)
        conn = Connection(key_host, user=hop.user, port=key_port, config=Config(ssh_config=paramiko.SSHConfig()),
                          connect_timeout=int(self.spec.connect_timeout),
                          connect_kwargs={"sock": sock, "auth_strategy": hostkeys.RevokedFirst(
                                              login, self.known_hosts, hop.known_name),
                                          "banner_timeout": self.spec.connect_timeout,
                                          "auth_timeout": self.spec.connect_timeout})
        hostkeys.configure(conn.client, known_hosts=self.known_hosts, name=hop.known_name,
                           pinned=pinned, accept_new=self.accept_new_host_keys)
        where, started = hop.where + through, time.monotonic()
        try:
            conn.open()
        except hostkeys.HostKeyRefused as exc:
            conn.close()
            raise (hostkeys.HostKeyRefused(f"{where}: {exc}") if through else exc) from None
        except paramiko.BadHostKeyException as exc:
            conn.close()
            hostkeys.refuse_revoked(self.known_hosts, hop.known_name, exc.key)
            if hop is not self.target or pinned:
                raise self._changed(where, hop, exc, pinned) from None
            line = f"{exc.key.get_name()} {exc.key.get_base64()}"
            if hostkeys.listed(self.known_hosts, hop.known_name, exc.key):
                # another of its known keys (paramiko checks only the first of each type; OpenSSH takes any)
                raise _TryPinned(line) from None
            taken = self._changed_key_accepted(hop, exc.key)
            if taken is None:
                raise self._changed(where, hop, exc, pinned) from None
            line = f"{taken.get_name()} {taken.get_base64()}"
            hostkeys.rewrite(self.known_hosts, hop.known_name, keep=lambda _: False, add=[line])
            if self.on_change:
                self.on_change(self.name, "changed", f"host key in {self.known_hosts}",
                               f"now {taken.get_name()} {self.accept_changed_host_key} (--accept-changed-host-key); "
                               f"the old keys of {hop.known_name} removed")
            raise _TryPinned(line) from None
        except paramiko.auth_strategy.AuthFailure as exc:
            conn.close()
            hint = self._login_hint(hop) if only is None else "offered alone: no agent, no other key, no password"
            raise LoginRefused(sshauth.why_refused(exc) or
                               f"{where}: login refused (tried {sshauth.tried(exc)}; {hint})") from None
        except paramiko.AuthenticationException:
            conn.close()
            raise LoginRefused(f"{where}: login refused ({self._login_hint(hop)})") from None
        except (OSError, socket.timeout, paramiko.SSHException, EOFError) as exc:
            conn.close()
            if STOP.is_set():  # Ctrl-C closed its socket (dial.abandon_logins): no question asked of the port
                raise Unreachable(f"{where}: {INTERRUPTED}") from None
            raise Unreachable(failures.not_connected(exc, self.spec, where, address=hop.hostname, port=hop.port,
                                                     waited=time.monotonic() - started)) from None
        return conn

    def _login_hint(self, hop: sshconf.Hop) -> str:
        hint = "load your key into ssh-agent, or set key (or password_file, or --prompt-for-login-password)"
        if hop is self.target and self.spec.role == "pi" and hop.user == "pi":
            hint = f"{failures.PI_USER_HINT}; or {hint}"
        return hint

    def authenticate(self, transport: paramiko.Transport) -> None:
        """Log in on a transport opened elsewhere (verify's through a tunnel) as this host's own connection
        does, without the login password. Raises paramiko.AuthenticationException."""
        Login(self.target, self.keys, None).authenticate(transport)

    def _changed_key_accepted(self, hop: sshconf.Hop, key: paramiko.PKey) -> paramiko.PKey | None:
        """The host's new key the user vouched for with --accept-changed-host-key: the one it showed, or
        another of its keys (the fingerprint read on the console may be of another type)."""
        if not self.accept_changed_host_key:
            return None
        if hostkeys.fingerprint(key) == self.accept_changed_host_key:
            return key
        return hostkeys.offered(hop.hostname, hop.port, self.accept_changed_host_key, self.spec.connect_timeout)

    def _changed(self, where: str, hop: sshconf.Hop, exc: paramiko.BadHostKeyException,
                 pinned: str | None) -> hostkeys.HostKeyRefused:
        got = hostkeys.fingerprint(exc.key)
        if self.accept_changed_host_key and not pinned and hop is self.target:
            return hostkeys.HostKeyRefused(
                f"host key for {where} CHANGED to {exc.key.get_name()} {got}, and none of its keys is the "
                f"--accept-changed-host-key {self.accept_changed_host_key}: refused, known_hosts unchanged. Read the "
                "fingerprint again on the provider's console (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub)")
        fix = (f"update host_key of {self.name} in the inventory" if pinned else
               f"check the new key's fingerprint on the host's console (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) "
               f"and rerun with --accept-changed-host-key {got} if it is the same, or remove its old line from "
               f"{self.known_hosts} (ssh-keygen -R) (docs/troubleshooting.md)")
        return hostkeys.HostKeyRefused(
            f"host key for {where} CHANGED: got {exc.key.get_name()} {got}, expected "
            f"{hostkeys.fingerprint(exc.expected_key)} (known as {hop.known_name}). This may be an attack; if the "
            f"host was really reinstalled, {fix}")

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
            opened = self._open(use_password=use_password)
        except (Unreachable, hostkeys.HostKeyRefused):
            return False
        return self._runs_true(*opened) is None

    def _runs_true(self, conn: Connection, hops: list[Connection]) -> str | None:
        """Run `true` on a fresh login, then close it: None if it ran, else why not."""
        try:
            chan = conn.client.get_transport().open_session(timeout=10)  # type: ignore[union-attr]
            chan.exec_command("true")
            status = chan.recv_exit_status()
            return None if status == 0 else f"{self.name}: `true` exited {status}"
        except (paramiko.SSHException, OSError) as exc:
            return f"{self.name}: connection lost: {exc}"
        finally:
            _close_all([*hops, conn])

    def proves_key(self, key: Path, *, within: float = 5) -> str | None:
        """A brand-new login that offers the key file `key` alone (no agent, no other key, no password),
        by the same route as every other login to this host (the path this run took: its address or the
        ssh config's ProxyJump, or its tunnel through its VPS), its host key checked as always, then `true`.
        None if `key` alone let us in; else why not. A refusal is final at once (another try would only
        count against the host's sshd penalties); no answer, or a connection lost, is retried for `within`
        seconds."""
        deadline = time.monotonic() + within
        while True:
            try:
                why = self._runs_true(*self._open(use_password=False, only=key))
            except (LoginRefused, hostkeys.HostKeyRefused) as exc:
                return str(exc)
            except Unreachable as exc:
                why = str(exc)
            if why is None or time.monotonic() > deadline:
                return why
            time.sleep(0.3)

    def close(self) -> None:
        _close_all([*self._hops, *([self._conn] if self._conn is not None else [])])
        self._conn, self._hops = None, []


def _close_all(conns: Sequence[Connection]) -> None:
    """Close connections, the innermost (last) first: each runs through the one before it."""
    for conn in reversed(conns):
        conn.close()
