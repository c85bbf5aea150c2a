"""Host-key checking for every connection: known_hosts and inventory pins decide, never "accept anything".

Fabric sets paramiko's AutoAddPolicy; we replace it. An unknown key is refused with its
fingerprint and the flag that records it; a changed key is refused always (paramiko raises
BadHostKeyException before authentication, so nothing is sent to an impostor).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import paramiko
from paramiko.auth_strategy import AuthStrategy, SourceResult


class HostKeyRefused(Exception):
    """The host's key is unknown or changed; the message says what to do."""


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


_write_lock = threading.Lock()


class CheckPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only for hosts with no known key."""

    def __init__(self, known_hosts: Path, *, accept_new: bool) -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        refuse_revoked(self.known_hosts, hostname, key)
        if not self.accept_new:
            raise HostKeyRefused(
                f"unknown host key for {hostname}: {key.get_name()} {fingerprint(key)}. "
                f"Check it out of band (on the host: ssh-keygen -lf /etc/ssh/ssh_host_{_short(key)}_key.pub), "
                f"then rerun with --accept-new-host-keys to record it in {self.known_hosts}, "
                "or pin it as host_key in the inventory"
            )
        with _write_lock:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with self.known_hosts.open("a") as out:
                out.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def _pattern_matches(name: str, field: str) -> bool:
    """Does a known_hosts host field name `name` as OpenSSH reads it: a hashed name, or patterns with `*`
    and `?`, any of them negated with `!` (a negated match wins)?"""
    if field.startswith("|1|"):
        return _matches(name, field)
    found = False
    for pattern in field.split(","):
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in body.lower())
        if re.fullmatch(regex, name.lower()):
            if negated:
                return False
            found = True
    return found


def revoked_at(known_hosts: Path, name: str, key: paramiko.PKey) -> int | None:
    """The number of a `@revoked` line of known_hosts that revokes `key` for `name`, None if there is none."""
    if not known_hosts.exists():
        return None
    for number, line in enumerate(known_hosts.read_text(errors="replace").splitlines(), 1):
        words = line.split()
        if len(words) >= 4 and words[0] == "@revoked" and words[2:4] == [key.get_name(), key.get_base64()] \
                and _pattern_matches(name, words[1]):
            return number
    return None


def refuse_revoked(known_hosts: Path, name: str, key: paramiko.PKey) -> None:
    """Raise HostKeyRefused if known_hosts marks the host's key `@revoked` (OpenSSH never accepts such a key,
    even where another line lists it as known)."""
    number = revoked_at(known_hosts, name, key)
    if number is not None:
        raise HostKeyRefused(
            f"host key for {name} is REVOKED: {key.get_name()} {fingerprint(key)} is marked @revoked in "
            f"{known_hosts}:{number}, so it is refused even where another line lists it. Give the host a new key, "
            f"then remove its old lines (ssh-keygen -R {name}) and record the new one (--accept-new-host-keys)")


class RevokedFirst:
    """An auth strategy that first refuses a revoked host key: paramiko has accepted the key (known, pinned,
    or just recorded) and nothing is sent yet, as ssh refuses it before it logs in."""

    def __init__(self, inner: AuthStrategy, known_hosts: Path, name: str) -> None:
        self.inner, self.known_hosts, self.name = inner, known_hosts, name

    def authenticate(self, transport: paramiko.Transport) -> list[SourceResult]:
        refuse_revoked(self.known_hosts, self.name, transport.get_remote_server_key())
        return self.inner.authenticate(transport=transport)


def load_known(keys: paramiko.HostKeys, known_hosts: Path) -> None:
    """known_hosts's plain key lines into `keys` (as paramiko's HostKeys.load would, which fails on a
    `@revoked` or `@cert-authority` line): marked lines are no host's key, a line paramiko cannot read is
    skipped as OpenSSH skips it."""
    for number, line in enumerate(known_hosts.read_text(errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(("#", "@")):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line.strip(), number)  # OpenSSH allows indenting
        except (paramiko.hostkeys.InvalidHostKey, ValueError):
            continue
        if entry is not None:
            keys._entries.append(entry)  # type: ignore[attr-defined]


def _matches(name: str, field: str) -> bool:
    """Does a known_hosts host field (plain names, or one `|1|salt|hash`) name `name`?"""
    if field.startswith("|1|"):
        return paramiko.HostKeys.hash_host(name, field.split("|")[2]) == field
    return name in field.split(",")


def known_lines(known_hosts: Path, name: str) -> list[str]:
    """The lines of known_hosts that name `name` (OpenSSH accepts any of them; paramiko only the first of
    each key type, so Remote asks here when paramiko calls a key changed)."""
    if not known_hosts.exists():
        return []
    # surrogateescape: a byte that is not UTF-8 (a comment in latin-1) neither stops the read nor changes on rewrite
    return [line for line in known_hosts.read_text(errors="surrogateescape").splitlines()
            if len(line.split()) >= 3 and not line.startswith(("#", "@")) and _matches(name, line.split()[0])]


def listed(known_hosts: Path, name: str, key: paramiko.PKey) -> bool:
    """Is this key one of the keys known_hosts lists for `name`?"""
    return any(line.split()[1:3] == [key.get_name(), key.get_base64()] for line in known_lines(known_hosts, name))


def rewrite(known_hosts: Path, name: str, keep: Callable[[str], bool], add: Sequence[str]) -> None:
    """known_hosts with the lines for `name` that `keep` refuses removed and `add` (`type base64`) appended
    for it; every other line as it was. Written to a temp file and renamed into place."""
    with _write_lock:
        old = known_hosts.read_text(errors="surrogateescape").splitlines() if known_hosts.exists() else []
        ours = set(known_lines(known_hosts, name))
        kept = [line for line in old if line not in ours or keep(" ".join(line.split()[1:3]))]
        have = {" ".join(line.split()[1:3]) for line in kept if line in ours}
        lines = kept + [f"{name} {k}" for k in add if k not in have]
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        tmp = known_hosts.with_name(known_hosts.name + ".pitunnel-tmp")
        tmp.write_text("".join(line + "\n" for line in lines), errors="surrogateescape")
        if known_hosts.exists():
            os.chmod(tmp, known_hosts.stat().st_mode & 0o777)
        os.replace(tmp, known_hosts)


KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512")


def offered(address: str, port: int, fingerprint_wanted: str, timeout: float) -> paramiko.PKey | None:
    """The host's key with this fingerprint, asking it for each key type in turn (a user may read any of
    them on the console; a connection shows only one). Only the key exchange runs: nothing is sent."""
    for keytype in KEY_TYPES:
        try:
            sock = socket.create_connection((address, port), timeout=timeout)
        except OSError:
            return None
        transport = paramiko.Transport(sock)
        try:
            transport.get_security_options().key_types = (keytype,)
            transport.start_client(timeout=timeout)
            key = transport.get_remote_server_key()
            if fingerprint(key) == fingerprint_wanted:
                return key
        except (paramiko.SSHException, OSError, EOFError):
            pass
        finally:
            transport.close()
    return None


def _short(key: paramiko.PKey) -> str:
    return {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa"}.get(key.get_name(), "ecdsa")


def configure(client: paramiko.SSHClient, *, known_hosts: Path, name: str, pinned: str | None,
              accept_new: bool) -> None:
    """Make `client` check keys: the pin alone if the inventory has one, else known_hosts."""
    client.get_host_keys().clear()
    # Fabric may have loaded ~/.ssh/known_hosts; we decide which file (paramiko has no public way to unload it)
    client._system_host_keys.clear()  # type: ignore[attr-defined]
    if pinned:
        keytype, blob = pinned.split()[:2]
        client.get_host_keys().add(name, keytype, paramiko.PKey.from_type_string(keytype, base64.b64decode(blob)))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return
    if known_hosts.exists():
        load_known(client._system_host_keys, known_hosts)  # type: ignore[attr-defined]
    client.set_missing_host_key_policy(CheckPolicy(known_hosts, accept_new=accept_new))
