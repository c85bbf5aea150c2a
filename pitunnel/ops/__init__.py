"""Operations: each reads facts, compares them with what is wanted, and plans only the commands
that close the gap, or says in one line why nothing is needed (pyinfra's model).

Planning is pure: it never touches a host and sets nothing on the op; what a step wants to know of the
host it reads from the facts the runner returns (typed, by each fact's own parse step).

One module per job: base.py (Op, Plan, Handler, Observe), shell.py (quoting, backups, safe writes),
records.py (what pitunnel made on a host), files.py, packages.py, users.py (accounts, key pairs) and
services.py (systemd units, Later). The commit-confirm guard of sshd changes is runner work: pitunnel/guard.py.
"""

from __future__ import annotations

from .base import Handler, Observe, Op, Plan, Refused
from .files import Absent, Directory, File, Pruned, Symlink, managed_lines
from .packages import (APT_AGE, APT_FRESH_SECONDS, APT_UPDATE_OPTIONS, Packages, PackagesAbsent,
                       apt_install_commands)
from .records import OWN_COMMENTS, STATE_DIR, record_commands, record_fact, recorded, unrecord_commands
from .services import LATER_SCRIPT, Later, Service, arm_later
from .shell import (BACKUP_DIR, ENTER_FUNCTION, backup_commands, backup_path, directory_commands,
                    drop_backup_commands, q, restore_commands, write_file_commands)
from .users import KeyPair, KeyState, SystemUser, UserAbsent, key_state

__all__ = [
    "APT_AGE", "APT_FRESH_SECONDS", "APT_UPDATE_OPTIONS", "BACKUP_DIR", "ENTER_FUNCTION", "LATER_SCRIPT",
    "OWN_COMMENTS", "STATE_DIR", "Absent", "Directory", "File", "Handler", "KeyPair", "KeyState", "Later", "Observe",
    "Op", "Packages", "PackagesAbsent", "Plan", "Pruned", "Refused", "Service", "Symlink", "SystemUser", "UserAbsent",
    "apt_install_commands", "arm_later", "backup_commands", "backup_path", "directory_commands",
    "drop_backup_commands", "key_state", "managed_lines", "q", "record_commands", "record_fact", "recorded",
    "restore_commands", "unrecord_commands", "write_file_commands",
]
