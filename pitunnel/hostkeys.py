"""Host-key checking for every connection: known_hosts and inventory pins decide, never "accept anything".

Fabric sets paramiko's AutoAddPolicy; we replace it. An unknown key is refused with its
fingerprint and the flag that records it; a changed key is refused always (paramiko raises
BadHostKeyException before authentication, so nothing is sent to an impostor).
"""

from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path

import paramiko


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
        client.load_system_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(CheckPolicy(known_hosts, accept_new=accept_new))
