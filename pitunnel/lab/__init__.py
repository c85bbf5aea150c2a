"""The local lab: a VPS and Pis behind NAT, as Debian hosts booted with systemd on this machine."""

from .lab import UpReport, down, record, shell_argv, status, up
from .system import LabError

__all__ = ["LabError", "UpReport", "down", "record", "shell_argv", "status", "up"]
