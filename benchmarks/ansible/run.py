"""Running the comparison playbook: find ansible-playbook and sshpass (never install them), and build
its command line and environment (this folder's ansible.cfg, a fresh ssh ControlPath per run)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLAYBOOK = HERE / "site.yml"
CONFIG = HERE / "ansible.cfg"
INSTALL_ANSIBLE = ".venv/bin/pip install -e '.[bench]'"
INSTALL_SSHPASS = "apt-get install -y sshpass"


class Missing(Exception):
    """A tool the comparison needs is not installed; the message names the command that installs it."""


def find_playbook_command() -> str:
    """ansible-playbook next to this Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.exists():
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise Missing(f"ansible-playbook is not installed: install it with `{INSTALL_ANSIBLE}`")
    return found


def preflight(*, needs_password: bool) -> str:
    """The ansible-playbook to run; Missing if it, or sshpass for a first password login, is absent."""
    command = find_playbook_command()
    if needs_password and shutil.which("sshpass") is None:
        raise Missing(f"sshpass is not installed (Ansible needs it for the Pis' first password login): "
                      f"install it with `{INSTALL_SSHPASS}`")
    return command


def playbook_argv(command: str, inventory: Path) -> list[str]:
    return [command, "-i", str(inventory), str(PLAYBOOK)]


def playbook_env(control_dir: Path) -> dict[str, str]:
    """This folder's ansible.cfg; ssh masters in `control_dir`, so a run never reuses an earlier run's."""
    env = dict(os.environ)
    env.update({"ANSIBLE_CONFIG": str(CONFIG), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
                "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "PYTHONUNBUFFERED": "1"})
    return env
