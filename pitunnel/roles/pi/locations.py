"""Where a Pi's tunnel lives on the Pi, by name: the tunnel account's home and key file, and for each VPS
its unit instance, watchdog script and unit, and config folder (the role's steps, verify, status and key
rotation all use them). File locations and unit names only: a Pi's path through a VPS is inventory.PiPath."""

from __future__ import annotations

from pitunnel.inventory import PiSpec
from pitunnel.roles.pi.role import PI_DEFAULTS


def home_of(user: str) -> str:
    return "/root" if user == "root" else f"/home/{user}"


def tunnel_home(pi: PiSpec) -> str:
    return home_of(pi.user) if pi.tunnel_user == pi.user else PI_DEFAULTS["tunnel_home"]


def key_path(pi: PiSpec) -> str:
    return f"{tunnel_home(pi)}/.ssh/{PI_DEFAULTS['key_name']}"


def key_comment(pi: PiSpec) -> str:
    return f"pitunnel:{pi.name}"


def unit(vps: str) -> str:
    """The tunnel's systemd unit for one VPS: an instance of the template, pitunnel@<vps>.service."""
    return PI_DEFAULTS["unit"].replace("@", f"@{vps}", 1)


def watchdog_unit(vps: str) -> str:
    return PI_DEFAULTS["watchdog_unit"].replace("@", f"@{vps}", 1)


def vps_config_dir(vps: str) -> str:
    """The tunnel's own ssh_config and known_hosts for one VPS."""
    return f"{PI_DEFAULTS['config_dir']}/{vps}"


def watchdog_path(vps: str) -> str:
    return f"{PI_DEFAULTS['watchdog_path']}-{vps}"


def bootstrap_unit(vps: str) -> str:
    """An enrolled Pi's bootstrap tunnel to one VPS (pitunnel enroll): pitunnel-bootstrap@<vps>.service."""
    return PI_DEFAULTS["bootstrap_unit"].replace("@", f"@{vps}", 1)


def credential_path(vps: str) -> str:
    """Where systemd hands the bootstrap instance for `vps` its key (LoadCredential), readable by its user alone."""
    return f"/run/credentials/{bootstrap_unit(vps)}/key"
