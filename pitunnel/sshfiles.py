"""`pitunnel ssh-config --write`: pitunnel's Host blocks in a file of their own under ~/.ssh, and one `Include`
line for it at the top of ~/.ssh/config.

OpenSSH reads ~/.ssh/config from the top and takes the first value it finds for each setting; an `Include`
under a `Host` or `Match` line applies only to the hosts that line matches. So the line goes above the first
of them, as the file's first line: then `ssh pi1`, `scp` and `rsync` find pitunnel's blocks. Nothing else in
the user's file changes; a copy of it as it was is kept beside it each time the line is added. pitunnel's own
files start with a marker line, and pitunnel writes over no file without it. A second run changes nothing and
says so; with `check`, nothing is written and each change is shown.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

from .quoting import ssh
from .sshroutes import LAPTOP

MARKER: str = LAPTOP.defaults["marker"]
INCLUDE_COMMENT = "# Added by `pitunnel ssh-config --write`: pitunnel's Host blocks for the Pis and their VPSes"


class NotOurs(Exception):
    """A file pitunnel would write exists, and pitunnel did not write it; the message says what to do."""


def paths(home: Path) -> tuple[Path, Path]:
    """Where --write puts the Host blocks and the pinned host keys, under `home`/.ssh."""
    folder = home / ".ssh"
    return folder / LAPTOP.defaults["config_name"], folder / LAPTOP.defaults["pins_name"]


def write(home: Path, config: str, pins: str, *, check: bool, say: Callable[[str], None]) -> bool:
    """The blocks (`config`) and pins in their files, and the Include line in `home`/.ssh/config; each outcome
    said in one line (with `check`, what would change, and nothing written). True if anything changed."""
    conf_file, pins_file = paths(home)
    folder = conf_file.parent
    for file in (conf_file, pins_file):  # before anything is written: one we may not write stops the run
        if _foreign(file):
            raise NotOurs(f"{file} exists and pitunnel did not write it (its first line is not {MARKER!r}): "
                          "pitunnel leaves it as it is. Fix: move it away, then run ssh-config --write again")
    if not folder.is_dir():
        say(f"{'would create' if check else 'created'} {folder} (mode 700)")
        if not check:
            folder.mkdir(mode=0o700, parents=True)
    changed = [_own(conf_file, config, check=check, say=say)]
    if pins:
        changed.append(_own(pins_file, pins, check=check, say=say))
    elif pins_file.exists():  # ours (checked above), and no host has a pin any more
        say(f"{'would remove' if check else 'removed'} {pins_file} (no host key is pinned in the inventory now)")
        if not check:
            pins_file.unlink()
        changed.append(True)
    changed.append(_include(folder / "config", conf_file, check=check, say=say))
    return any(changed)


def _foreign(file: Path) -> bool:
    if not file.exists() and not file.is_symlink():
        return False
    try:
        return not file.read_text(encoding="utf-8", errors="replace").startswith(MARKER)
    except OSError:
        return True


def _own(file: Path, text: str, *, check: bool, say: Callable[[str], None]) -> bool:
    """`file` holds `text` (mode 600): written whole, at once, unless it does already."""
    old = file.read_text(encoding="utf-8", errors="replace") if file.exists() else None
    if old == text and file.stat().st_mode & 0o777 == 0o600:
        say(f"{file}: up to date")
        return False
    if check:
        say(f"would write {file} (mode 600):\n" + _diff(old or "", text, file))
        return True
    replace(file, text, mode=0o600)
    say(f"wrote {file} (mode 600)")
    return True


def _include(config: Path, conf_file: Path, *, check: bool, say: Callable[[str], None]) -> bool:
    """One `Include` of `conf_file` at the top of the user's ssh config, unless one above its first Host or
    Match line names it already. The file is written through a symlink (a dotfiles manager's), never over it."""
    real = config.resolve() if config.is_symlink() else config
    old = real.read_text(encoding="utf-8", errors="surrogateescape") if real.exists() else None  # bytes kept
    if old is not None and includes(old, conf_file, home=conf_file.parent):
        say(f"{config}: includes {conf_file} already")
        return False
    line = f"Include {ssh(conf_file)}"
    text = f"{INCLUDE_COMMENT}\n{line}\n" + ("\n" + old if old else "")
    backup = real.with_name(real.name + LAPTOP.defaults["backup_suffix"])
    if check:
        say(f"would add `{line}` at the top of {config}" + (f" (a copy as it was: {backup})" if old is not None else
                                                             " (a new file, mode 600)"))
        return True
    if old is not None:
        shutil.copy2(real, backup)
    replace(real, text, mode=real.stat().st_mode & 0o777 if old is not None else 0o600)
    say(f"added `{line}` at the top of {config}" + (f" (as it was: {backup})" if old is not None else
                                                     " (a new file, mode 600)"))
    return True


def includes(text: str, conf_file: Path, *, home: Path) -> bool:
    """Does an `Include` above the first Host or Match line of this ssh config name `conf_file` (a relative
    path is under `home`, ~/.ssh, as OpenSSH reads it; a glob may name it)?"""
    for line in text.splitlines():
        words = re.split(r"\s*=\s*|\s+", line.strip(), maxsplit=1)  # the key ends at a space or one "="
        if not words[0] or words[0].startswith("#"):
            continue
        key = words[0].lower()
        if key in ("host", "match"):
            return False
        if key == "include" and len(words) > 1:
            try:
                args = shlex.split(words[1])
            except ValueError:
                continue
            for arg in args:
                where = Path(arg).expanduser() if arg.startswith("~") else Path(arg)
                where = where if where.is_absolute() else home / where
                if fnmatch.fnmatchcase(str(conf_file), str(where)):
                    return True
    return False


def replace(file: Path, text: str, *, mode: int) -> None:
    """`file` holds `text` with `mode`, at once (a reader never sees half of it)."""
    temporary = file.with_name(file.name + ".pitunnel-tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as out:
        out.write(text)
    os.chmod(temporary, mode)
    os.replace(temporary, file)


def _diff(old: str, new: str, file: Path) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        str(file), str(file))).rstrip("\n")
