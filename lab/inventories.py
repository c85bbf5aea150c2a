"""The lab's inventory variants for `invoke demo` and the lab tests: HTTPS from the lab's ACME CA, and the VPS's
status page on top of it."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import yaml

from pitunnel.taskkit import LAB_INVENTORY

from .acme import start_ca
from .state import STATE_DIR


HTTPS_INVENTORY = STATE_DIR / "https.yml"  # in the lab's state: lab.down removes it (and its ports file)
HTTPS_NAME = "vps.pitunnel.test"  # the lab VPS's public_name: the lab's DNS (lab/acme.py) answers it with the VPS


def https_inventory() -> Path:
    """The lab's inventory with HTTPS on: acme from the lab's pebble, public_name for the path routes, and
    verify trusting pebble's root."""
    ca = start_ca()
    doc = yaml.safe_load(LAB_INVENTORY.read_text())
    doc["settings"]["verify_ca_file"] = str(ca.root)
    doc["vps"]["vps"].update(public_name=HTTPS_NAME, acme={"email": "admin@pitunnel.test", "directory": ca.directory,
                                                           "ca_bundle": str(ca.ca_bundle)})
    HTTPS_INVENTORY.write_text(yaml.safe_dump(doc, sort_keys=False))
    return HTTPS_INVENTORY


STATUS_USER = "admin"


def status_page_inventory() -> tuple[Path, Path, str]:
    """`demo --status-page`: the HTTPS inventory with the VPS's status page on, behind a password made here: its
    htpasswd for the inventory and `user:password` for the lab user, each in a file only root reads (lab.down
    removes them). Returns the inventory, the credentials file and the page's URL."""
    path = https_inventory()
    password = secrets.token_urlsafe(15)
    hashed = subprocess.run(["openssl", "passwd", "-apr1", "-stdin"], input=password, capture_output=True, text=True,
                            check=True).stdout.strip()  # on its standard input: never in a process list
    htpasswd, credentials = STATE_DIR / "status.htpasswd", STATE_DIR / "status-page.credentials"
    for file, text in ((htpasswd, f"{STATUS_USER}:{hashed}\n"), (credentials, f"{STATUS_USER}:{password}\n")):
        file.touch(mode=0o600)
        file.chmod(0o600)
        file.write_text(text)
    doc = yaml.safe_load(path.read_text())
    doc["vps"]["vps"]["status_page"] = {"basic_auth_file": str(htpasswd)}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, credentials, f"https://{HTTPS_NAME}/pitunnel-status/"
