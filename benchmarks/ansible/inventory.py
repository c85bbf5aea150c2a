"""A pitunnel inventory as an Ansible inventory: connection settings plus every variable that
pitunnel's templates need, computed by pitunnel's own functions so both sides render the same text.

Pure apart from reading the laptop's public key file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pitunnel.hostkeys import known_name
from pitunnel.inventory import HostSpec, Inventory, PiPath, PiSpec, VpsSpec
from pitunnel.roles.contract import listens
from pitunnel.roles.pi import locations as pi_locations
from pitunnel.roles.pi import role as pi_role
from pitunnel.roles.pi import steps as pi_steps
from pitunnel.roles.vps import role as vps_role
from pitunnel.roles.vps import steps as vps_steps
from pitunnel.roles.vps.authorized import authorized_line


class NotEquivalent(Exception):
    """The inventory uses a feature the Ansible playbook does not reproduce."""


def connection_vars(host: HostSpec, known_hosts: Path) -> dict[str, Any]:
    """How Ansible reaches a host: the same address, user, key, password file and host-key checks."""
    out: dict[str, Any] = {"ansible_host": host.address, "ansible_port": host.port, "ansible_user": host.user,
                           "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} "
                                                      "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes",
                           "ansible_timeout": int(host.connect_timeout)}
    if host.key is not None:
        out["ansible_ssh_private_key_file"] = str(host.key)
    if host.password_file is not None:
        out["ansible_password"] = "{{ lookup('file', '%s') }}" % host.password_file
    if host.sudo_password_file is not None:
        out["ansible_become_password"] = "{{ lookup('file', '%s') }}" % host.sudo_password_file
    return out


def vps_vars(inv: Inventory, vps: VpsSpec) -> dict[str, Any]:
    """The VPS role's defaults and template context (roles/vps/steps.py's), plus the lists the playbook loops over."""
    variables = vps_steps.context(inv, vps)
    routes = variables["tunnels"]
    return {
        **vps_role.VPS_DEFAULTS,
        **variables,
        "path_routes": [r for r in routes if not r["server_name"]],
        "name_routes": [r for r in routes if r["server_name"]],
        "auth_routes": [r for r in routes if r["auth_file"]],
        "location_files": [f"{r['file_stem']}.conf" for r in routes if not r["server_name"]],
        "site_files": [f"pitunnel-{r['file_stem']}.conf" for r in routes if r["server_name"]],
        "auth_files": [f"{r['file_stem']}.htpasswd" for r in routes if r["auth_file"]],
    }


def key_options(vps: VpsSpec, path: PiPath) -> str:
    """The options pitunnel puts before a Pi's key in the tunnel account's authorized_keys (`path`: the Pi
    through `vps`)."""
    return authorized_line(vps, path, "KEYTYPE BLOB").rsplit(" ", 3)[0]


def pi_vars(inv: Inventory, pi: PiSpec) -> dict[str, Any]:
    """The Pi role's defaults and template context (roles/pi/steps.py's), plus what the playbook needs besides."""
    if pi.disable_password_login:
        raise NotEquivalent(f"{pi.name}: disable_password_login is not reproduced by the Ansible playbook")
    if pi.tunnel_user == pi.user:
        raise NotEquivalent(f"{pi.name}: a tunnel_user equal to the login user is not reproduced by the playbook")
    if len(pi.all_vps) > 1:
        raise NotEquivalent(f"{pi.name}: several VPSes per Pi are not reproduced by the Ansible playbook")
    path = pi.first_path  # its one VPS
    vps = inv.vps_of(path)
    return {
        **pi_role.PI_DEFAULTS,
        **pi_steps.context(pi, vps),
        "watchdog_script": pi_locations.watchdog_path(vps.name),
        "watchdog_template": pi_role.PI_DEFAULTS["watchdog_unit"],
        "watchdog_unit": pi_locations.watchdog_unit(vps.name),
        "vps_known_name": known_name(vps.address, vps.port),
        "key_comment": pi_locations.key_comment(pi),
        "login_home": pi_locations.home_of(pi.user),
        "listen_specs": [listener.spec for listener in listens(path)],
        "authorized_options": key_options(vps, path),
        "laptop_key_line": pi_steps.laptop_key_line(inv),
    }


def ansible_inventory(inv: Inventory) -> dict[str, Any]:
    """The whole Ansible inventory (YAML format) for a pitunnel inventory: groups `vpses` and `pis`."""
    for host in inv.hosts():
        if host.host_key:
            raise NotEquivalent(f"{host.name}: a pinned host_key is not reproduced by the Ansible playbook")
    known = inv.settings.known_hosts
    vps_hosts = {v.name: {**connection_vars(v, known), **vps_vars(inv, v)} for v in inv.vps.values()}
    pi_hosts = {p.name: {**connection_vars(p, known), **pi_vars(inv, p)} for p in inv.pis.values()}
    return {"all": {"vars": {"vps_templates": str(vps_role.ROLE.templates), "pi_templates": str(pi_role.ROLE.templates)},
                    "children": {"vpses": {"hosts": vps_hosts}, "pis": {"hosts": pi_hosts}}}}


class _PlainDumper(yaml.SafeDumper):
    """No YAML anchors and aliases: a route shared by two lists is written out twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(inv: Inventory) -> str:
    return ("# Written by benchmarks/ansible/inventory.py from " + str(inv.path) + ": do not edit.\n"
            + yaml.dump(ansible_inventory(inv), Dumper=_PlainDumper, sort_keys=False, width=1000))


def write(inv: Inventory, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump(inv))
    return path
