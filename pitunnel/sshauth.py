"""Logging in as OpenSSH does: the agent's keys first, then key files (the inventory's `key`, the ssh
config's IdentityFile, else ~/.ssh/id_*), then the login password if there is one.

A key file protected by a passphrase is asked for once per run (on the terminal, never echoed, never
logged), however many hosts use it; the agent's copy is used instead whenever the agent holds it. With
no terminal to ask on, that key is skipped, and if nothing else let us in the error says to load it
into ssh-agent.
"""

from __future__ import annotations

import getpass
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko.auth_strategy import AuthFailure, AuthSource, AuthStrategy, InMemoryPrivateKey, Password, SourceResult
from paramiko.pkey import PublicBlob

from . import sshdebug
from .sshconf import Hop, Identity

TRIES = 3  # passphrase prompts per key before giving up on it for the run, as ssh does


class NoTerminal(Exception):
    """A key file needs its passphrase and there is no terminal to ask on."""


class WrongPassphrase(paramiko.SSHException):
    """Every passphrase typed for a key file was wrong: the key is set, its passphrase is the problem."""


def has_terminal() -> bool:
    """Can getpass ask the user: is there a controlling terminal, or is stdin one?"""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
        return True
    except OSError:
        return sys.stdin is not None and sys.stdin.isatty()


@dataclass
class KeyRing:
    """The key files of one run, each read (and its passphrase asked for) at most once."""

    ask: Callable[[str], str] = field(default=getpass.getpass, repr=False)
    terminal: Callable[[], bool] = has_terminal
    _keys: dict[Path, paramiko.PKey | Exception] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def key(self, path: Path) -> paramiko.PKey:
        """The private key in `path`; raises FileNotFoundError, NoTerminal or the reason it cannot be read
        (the same one on every later call: one prompt per key per run)."""
        with self._lock:  # hosts log in in parallel: one prompt, the others wait for its answer
            if path not in self._keys:
                try:
                    self._keys[path] = self._read(path)
                except Exception as exc:
                    self._keys[path] = exc
            found = self._keys[path]
        if isinstance(found, Exception):
            raise found
        return found

    def _read(self, path: Path) -> paramiko.PKey:
        try:
            return paramiko.PKey.from_path(path)
        except (paramiko.PasswordRequiredException, TypeError):  # TypeError: cryptography's "password-protected"
            pass
        if not self.terminal():
            raise NoTerminal(f"key {path} is protected by a passphrase and there is no terminal to ask for it: "
                             f"load it into ssh-agent (ssh-add {path}) and run again")
        for _ in range(TRIES):
            try:
                asked = self.ask(f"Passphrase for key {path}: ").encode()
                sshdebug.secret(asked)  # masked wherever -vv would show it
                return paramiko.PKey.from_path(path, password=asked)  # type: ignore[arg-type]  # bytes, stubs say str
            except (paramiko.SSHException, ValueError, TypeError):
                print(f"wrong passphrase for key {path}", file=sys.stderr, flush=True)
        raise WrongPassphrase(f"key {path}: no right passphrase after {TRIES} tries: run again and type it with care, "
                              f"or load the key into ssh-agent once (ssh-add {path}) and run again")


def public_blob(identity: Identity) -> bytes | None:
    """The public key of a key file without opening the private part (its .pub), if there is one."""
    try:
        return PublicBlob.from_file(str(identity.path) + ".pub").key_blob
    except (OSError, ValueError, paramiko.SSHException):
        return None


class FileKey(AuthSource):
    """A key file, opened (and its passphrase asked for) only when its turn comes."""

    def __init__(self, username: str, identity: Identity, ring: KeyRing) -> None:
        super().__init__(username=username)
        self.identity = identity
        self.ring = ring

    def __repr__(self) -> str:
        return f"FileKey(path={str(self.identity.path)!r}, source={self.identity.source!r})"

    def authenticate(self, transport: paramiko.Transport) -> list[str]:
        return transport.auth_publickey(self.username, self.ring.key(self.identity.path))


class Login(AuthStrategy):
    """How one hop is logged in to: ssh-agent, key files, then the password (if the run has one)."""

    def __init__(self, hop: Hop, ring: KeyRing, password: str | None, *, agent: bool = True) -> None:
        super().__init__(ssh_config=paramiko.SSHConfig())
        self.hop = hop
        self.ring = ring
        self.password = password
        self.agent: paramiko.Agent | None = None
        if agent and os.environ.get("SSH_AUTH_SOCK"):
            try:
                self.agent = paramiko.Agent()
            except paramiko.SSHException:  # a socket with no agent behind it: as if there were none
                self.agent = None

    def get_sources(self) -> Iterator[AuthSource]:
        user = self.hop.user
        files = [i for i in self.hop.identities if i.path.is_file()]
        tried: set[bytes] = set()
        if self.agent is not None:
            wanted = {b for b in map(public_blob, files) if b is not None}
            for key in self.agent.get_keys():
                if self.hop.identities_only and key.asbytes() not in wanted:
                    continue
                tried.add(key.asbytes())
                yield InMemoryPrivateKey(user, key)
        for identity in files:
            if public_blob(identity) not in tried or public_blob(identity) is None:
                yield FileKey(user, identity, self.ring)
        if self.password is not None:
            password = self.password
            yield Password(user, lambda: password)

    def authenticate(self, transport: paramiko.Transport) -> list[SourceResult]:
        try:
            return super().authenticate(transport)
        finally:
            if self.agent is not None:
                self.agent.close()


def why_refused(failure: AuthFailure) -> str | None:
    """The one line that says what to do when a key could not even be tried (no terminal for its
    passphrase, or no right passphrase typed), else None."""
    for _, result in failure.result:
        if isinstance(result, (NoTerminal, WrongPassphrase)):
            return str(result)
    return None


def tried(failure: AuthFailure) -> str:
    """What was tried, in a few words: 'ssh-agent (2 keys), /home/me/.ssh/id_ed25519, password'."""
    agent = sum(1 for source, _ in failure.result if isinstance(source, InMemoryPrivateKey))
    parts = [f"ssh-agent ({agent} key{'s' if agent != 1 else ''})"] if agent else []
    parts += [str(source.identity.path) for source, _ in failure.result if isinstance(source, FileKey)]
    parts += ["password" for source, _ in failure.result if isinstance(source, Password)]
    return ", ".join(parts) or "nothing: no agent key, no key file, no password"
