"""The bodies of `pitunnel ssh PI [-- CMD]` and `pitunnel ssh-config [--write]` (tasks.py declares them).

`ssh` runs the system's OpenSSH in pitunnel's place (exec: the terminal, Ctrl-C and the exit code are ssh's own)
with the Host blocks of sshroutes.py, kept in a private file of pitunnel's cache (one per inventory) that is
rewritten only when the inventory's routes change."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
from pathlib import Path

from invoke import Exit

from . import failures, sshfiles, sshroutes
from .inventory import Inventory
from .sshconf import BadSshConfig
from .taskkit import Flags, load


def _inventory(flags: Flags, *, quiet: bool) -> Inventory:
    flags.vet()
    return load(flags.inventory or None, check=True, record=False, out=io.StringIO() if quiet else None)


def _render(inv: Inventory, config: Path, pins: Path) -> sshroutes.Written:
    try:
        return sshroutes.render(inv, config, pins)
    except BadSshConfig as exc:
        raise Exit(str(exc), code=failures.USAGE) from None


def ssh_config(flags: Flags, *, write: bool) -> None:
    """Print the Host blocks, or with `write` keep them under ~/.ssh and include them from ~/.ssh/config."""
    inv = _inventory(flags, quiet=False)
    conf_file, pins_file = sshfiles.paths(Path.home())
    written = _render(inv, conf_file, pins_file)
    if not write:
        sys.stdout.write(written.config)
        if written.pins:
            print(f"(the inventory's pinned host keys go to {pins_file} with --write)", file=sys.stderr)
        return
    try:
        changed = sshfiles.write(Path.home(), written.config, written.pins, check=flags.check, say=print)
    except (sshfiles.NotOurs, OSError) as exc:
        raise Exit(f"ssh-config --write: {exc}", code=failures.USAGE) from None
    if not changed:
        print("ssh-config: nothing to change")
    elif not flags.check:
        first = next(iter(inv.pis), None)
        print(f"ssh-config: done; `ssh {first}`, scp and rsync reach the Pis by name" if first else "ssh-config: done")


def cached(inv: Inventory) -> Path:
    """The inventory's Host blocks in pitunnel's cache ($XDG_CACHE_HOME, else ~/.cache), mode 600, written when
    they changed; returns the config file."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pitunnel" / "ssh"
    stem = hashlib.sha256(str(inv.path.absolute()).encode()).hexdigest()[:16]
    conf_file, pins_file = base / f"{stem}.conf", base / f"{stem}.known_hosts"
    written = _render(inv, conf_file, pins_file)
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    for file, text in ((conf_file, written.config), (pins_file, written.pins)):
        if text and (not file.exists() or file.read_text(encoding="utf-8") != text):
            sshfiles.replace(file, text, mode=0o600)
    return conf_file


def command_after_dashes(argv: list[str]) -> list[str]:
    """What follows the first `--` of the command line (the command to run on the Pi), as given."""
    return argv[argv.index("--") + 1:] if "--" in argv else []


def ssh(flags: Flags, pi: str, command: list[str]) -> None:
    """Exec OpenSSH to `pi` (a Pi, or a VPS of one) by its routes."""
    inv = _inventory(flags, quiet=True)
    reachable = {name for name, p in inv.pis.items() if sshroutes.routes(inv, p)}
    vpses = {r.vps for p in inv.pis.values() for r in sshroutes.routes(inv, p)}
    if pi not in reachable | vpses:
        why = ("it has no ssh tunnel, so there is no way to it from away" if pi in inv.pis else
               f"it is revoked (since {inv.revoked[pi].since})" if pi in inv.revoked else
               "the VPS of no Pi here" if pi in inv.vps else f"no host of {inv.path} has that name")
        names = ", ".join(sorted(reachable)) or "none here"
        raise Exit(f"ssh: cannot reach {pi!r}: {why}. Fix: give a Pi with an ssh tunnel ({names}) or one of their "
                   "VPSes", code=failures.USAGE)
    program = shutil.which("ssh")
    if program is None:
        raise Exit("ssh: no `ssh` on PATH. Fix: install OpenSSH's client (Debian: apt install openssh-client)",
                   code=failures.USAGE)
    try:
        conf_file = cached(inv)
    except OSError as exc:
        raise Exit(f"ssh: cannot write its ssh config under {exc.filename or 'the cache folder'} "
                   f"({exc.strerror or exc}). Fix: make it writable, or set XDG_CACHE_HOME to a folder that is",
                   code=failures.USAGE) from None
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(program, ["ssh", "-F", str(conf_file), pi, *command])
