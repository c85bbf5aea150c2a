"""A loopback SSH server for unit tests of pitunnel.remote and pitunnel.hostkeys: paramiko's server side on
127.0.0.1, password login, each exec'd command run by a local `sh`, and sudo played as the test says."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading

import paramiko


class FakeSshd(paramiko.ServerInterface):
    """`sudo` is "nopasswd" (sudo -n works), "password" (only `sudo -S` with `sudo_password` on stdin's first
    line works) or "refuse" (every sudo asks for a password it never gets). Commands seen are kept."""

    def __init__(self, host_key: paramiko.PKey, *, login_password: str = "login", sudo: str = "nopasswd",
                 sudo_password: str = "sudo-pw", port: int = 0) -> None:
        self.host_key, self.login_password = host_key, login_password
        self.sudo, self.sudo_password = sudo, sudo_password
        self.commands: list[str] = []
        self.users: list[str] = []  # who logged in, or tried to
        self.client_key: paramiko.PKey | None = None  # a key that may log in, besides the password
        self.other_host_keys: list[paramiko.PKey] = []  # its host keys of other types, shown to who asks for them
        self.allow_sessions = True  # False: logins work, every session (command) is refused
        self.forwarding = False  # True: direct-tcpip channels (ssh -J, -W) are connected where they ask
        self._forwards: dict[int, socket.socket] = {}  # channel id -> its connection, until accepted
        self.forwarded: list[tuple[tuple[str, int], tuple[str, int]]] = []  # (origin, destination) of each asked
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # `port`: a closed fake's, again
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(16)
        self.port: int = self._sock.getsockname()[1]
        self._transports: list[paramiko.Transport] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def close(self) -> None:
        """Stop accepting, then close. The thread blocked in accept() is woken by shutdown() and ends before the
        socket's descriptor is freed: a closed fake left waiting on that number would accept, with its own
        host key, the connections of the next socket given the same number (another test's fake sshd)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout=5)
        self._sock.close()
        for t in self._transports:
            t.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            transport = paramiko.Transport(client)
            transport.add_server_key(self.host_key)
            for other in self.other_host_keys:
                transport.add_server_key(other)
            self._transports.append(transport)
            try:
                transport.start_server(server=self)
            except (paramiko.SSHException, EOFError, OSError):
                continue
            if self.forwarding:
                threading.Thread(target=self._forwarder, args=(transport,), daemon=True).start()

    def _forwarder(self, transport: paramiko.Transport) -> None:
        while transport.is_active():
            chan = transport.accept(0.5)
            sock = self._forwards.pop(chan.get_id(), None) if chan is not None else None
            if chan is not None and sock is not None:
                threading.Thread(target=_pump, args=(chan, sock), daemon=True).start()

    def check_channel_direct_tcpip_request(self, chanid: int, origin: tuple[str, int],
                                           destination: tuple[str, int]) -> int:
        self.forwarded.append((origin, destination))
        if not self.forwarding:
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        try:
            self._forwards[chanid] = socket.create_connection(destination, timeout=5)
        except OSError:
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        return paramiko.OPEN_SUCCEEDED

    # paramiko.ServerInterface
    def get_allowed_auths(self, username: str) -> str:
        return "password,publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.users.append(username)
        return paramiko.AUTH_SUCCESSFUL if key == self.client_key else paramiko.AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        self.users.append(username)
        return paramiko.AUTH_SUCCESSFUL if password == self.login_password else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session" and self.allow_sessions:
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.commands.append(command.decode())
        threading.Thread(target=self._exec, args=(channel, command.decode()), daemon=True).start()
        return True

    def _exec(self, chan: paramiko.Channel, command: str) -> None:
        data = bytearray()
        while " sh -c " in f" {command}":  # pitunnel's scripts come on stdin; a bare command (`true`) reads none
            chunk = chan.recv(65536)
            if not chunk:
                break
            data += chunk
        rc, out, err = self._run(command, bytes(data))
        if chan.closed:  # the client gave up waiting (a run's timeout): nobody to answer
            return
        try:
            chan.sendall(out)
            chan.sendall_stderr(err)
            chan.send_exit_status(rc)
            chan.shutdown_write()
        except (OSError, EOFError):  # closed while we answered
            pass
        chan.close()

    def _run(self, command: str, stdin: bytes) -> tuple[int, bytes, bytes]:
        if command.startswith("sudo "):
            options, _, rest = command.partition(" sh -c ")
            if self.sudo == "refuse" or (self.sudo == "password" and "-S" not in options.split()):
                return 1, b"", b"sudo: a password is required\n"
            if self.sudo == "password":
                line, _, stdin = stdin.partition(b"\n")
                if line.decode() != self.sudo_password:
                    return 1, b"", b"Sorry, try again.\nsudo: 1 incorrect password attempt\n"
            command = "sh -c " + rest
        done = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, check=False, timeout=60)
        return done.returncode, done.stdout, done.stderr


def _pump(chan: paramiko.Channel, sock: socket.socket) -> None:
    """Copy both ways between a forwarded channel and its connection until either end closes."""
    import select

    # either end may go first; closing a channel whose transport went already raises EOFError
    with contextlib.suppress(OSError, EOFError), sock, chan:
        while True:
            ready, _, _ = select.select([chan, sock], [], [], 1)
            if chan in ready:
                data = chan.recv(65536)
                if not data:
                    return
                sock.sendall(data)
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                chan.sendall(data)
