"""SSH through the VPS lands on the Pi: the user's way in (the VPS's public port, or a jump through the VPS to
its loopback listener), logging in as the Pi's connection does, and passing only if the far end shows this
Pi's own host key."""

from __future__ import annotations

import base64
import socket

import paramiko

from pitunnel import hostkeys
from pitunnel.inventory import Inventory, PiSpec, TunnelSpec, VpsSpec
from pitunnel.remote import Remote
from pitunnel.roles.contract import listen_spec
from pitunnel.roles.pi.locations import unit

# the hint when the laptop cannot connect to the public port (verify tells the causes apart: probes/reach.py)
NO_CONNECTION = ("Connection refused: nothing listens publicly on the VPS port. Is the tunnel up, and does "
                 "the VPS let it bind publicly (GatewayPorts clientspecified for the tunnel account)?")

def pi_host_keys(inv: Inventory, pi: PiSpec, name: str | None = None) -> paramiko.HostKeys:
    """The Pi's own host keys as the laptop knows them from direct contact (filed under `name` in
    known_hosts: how its connection looks them up, by default its address and port)."""
    keys = paramiko.HostKeys()
    if pi.host_key:
        keytype, blob = pi.host_key.split()[:2]
        keys.add("tunnel", keytype, paramiko.PKey.from_type_string(keytype, base64.b64decode(blob)))
        return keys
    if inv.settings.known_hosts.exists():
        hostkeys.load_known(keys, inv.settings.known_hosts)
    filed = name or hostkeys.known_name(pi.address, pi.port)
    found = keys.lookup(filed)
    out = paramiko.HostKeys()
    for keytype, key in (found or {}).items():
        if hostkeys.revoked_at(inv.settings.known_hosts, filed, key) is None:  # a revoked key proves nothing
            out.add("tunnel", keytype, key)
    return out


def ssh_through(inv: Inventory, pi: PiSpec, vps_remote: Remote, tunnel: TunnelSpec,
                vps: VpsSpec, pi_remote: Remote) -> tuple[bool, str, str]:
    """Log in to the Pi through the tunnel (as its connection logs in: agent, key files); pass only if the far
    end shows this Pi's own host key."""
    expected = pi_host_keys(inv, pi, pi_remote.target.known_name)
    if not expected.keys():
        return False, "the Pi's host key is unknown to the laptop", "record it on first direct contact (--accept-new-host-keys) or pin host_key in the inventory"
    if tunnel.public:
        where = f"{vps.address}:{tunnel.remote_port}"
        try:
            sock: socket.socket | paramiko.Channel = socket.create_connection((vps.address, tunnel.remote_port), timeout=10)
        except OSError as exc:
            return False, f"{where}: {exc}", NO_CONNECTION
    else:
        where = f"jump via {vps.name} to {listen_spec(tunnel)}"  # not public: its listener is on loopback
        transport = vps_remote.connection().client.get_transport()
        assert transport is not None
        try:
            sock = transport.open_channel("direct-tcpip", ("127.0.0.1", tunnel.remote_port), ("127.0.0.1", 0), timeout=10)
        except paramiko.ChannelException as exc:
            return False, f"{where}: {exc}", f"the tunnel is not listening on the VPS: is {unit(vps.name)} up on the Pi?"
    transport2 = paramiko.Transport(sock)
    try:
        transport2.start_client(timeout=10)
        key = transport2.get_remote_server_key()
        known = expected.lookup("tunnel")
        if known is None or known.get(key.get_name()) != key:
            return False, f"{where}: host key {hostkeys.fingerprint(key)} is not {pi.name}'s", \
                "another host answers on this port: check remote_port clashes and the tunnel's -R"
        try:
            pi_remote.authenticate(transport2)
        except paramiko.AuthenticationException:
            if pi.key is None:  # no key named for it: its own host key is the proof
                return True, f"{where}: {pi.name}'s host key ({key.get_name()})", ""
            return False, f"{where}: {pi.name}'s host key, but login refused", \
                "the tunnel reached the Pi's sshd but login failed: was the laptop key pushed?"
        chan = transport2.open_session(timeout=10)
        chan.exec_command("hostname")
        name = chan.makefile().read().decode().strip()
        return True, f"{where}: {pi.name}'s host key, logged in as {pi_remote.target.user}, hostname {name}", ""
    except EOFError:  # paramiko's, when the far end closes after its banner, before the key exchange
        return False, f"{where}: closed after the SSH banner, before the key exchange", \
            "an SSH server answered, then closed: does the Pi's sshd refuse new connections (MaxStartups, " \
            "PerSourcePenalties), or does another host answer on this port?"
    except (paramiko.SSHException, OSError) as exc:
        if str(exc).startswith("Error reading SSH protocol banner"):  # paramiko's wrapping of an end before it
            return False, f"{where}: closed before the SSH banner", \
                "the VPS accepted but the tunnel did not reach the Pi's sshd: is its tunnel to this VPS connected?"
        return False, f"{where}: {exc}", "the tunnel reached an sshd but login failed: was the laptop key pushed?"
    finally:
        transport2.close()
