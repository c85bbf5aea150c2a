"""The local lab: a VPS and Pis behind NAT, as Debian hosts booted with systemd on this machine."""

from .lab import UpReport, down, record, sh, shell_argv, status, up, write_file
from .system import LabError

__all__ = ["LabError", "UpReport", "down", "record", "sh", "shell_argv", "status", "up", "write_file"]
