"""pitunnel's own tasks: provision-vps, provision-pi, provision, verify, status and teardown.

Each takes the shared flags (pitunnel.cli.Flags) as one `flags` argument; tasks.py at the top of the
checkout puts them into `invoke`'s namespace.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from invoke import Context, Exit

from .cli import Flags, provisioning_task, run_play
from .play import Play

T = TypeVar("T")


def _collect(run: Callable[[Play], list[T]], show: Callable[[list[T]], None], flags: Flags) -> list[T]:
    """Run a read-only play quietly and print its rows, also those gathered before a failure ended it."""
    rows: list[T] = []
    try:
        run_play(lambda play: rows.extend(run(play)), flags, quiet=True)
    finally:
        show(rows)
    return rows


@provisioning_task()
def provision_vps(c: Context, flags: Flags) -> None:
    """Set up the VPS: a locked-down tunnel account, its sshd Match block, and Nginx in front of the tunnels."""
    from pitunnel.roles.vps.steps import provision

    run_play(provision, flags)


@provisioning_task()
def provision_pi(c: Context, flags: Flags) -> None:
    """Set up each Pi: autossh, a key made on the Pi and authorised on the VPS, and the tunnel's unit."""
    from pitunnel.roles.site import provision_pi

    run_play(provision_pi, flags)


@provisioning_task(flags=("inventory", "limit", "accept_new_host_keys", "prompt_for_login_password",
                          "prompt_for_sudo_password"))
def verify(c: Context, flags: Flags) -> None:
    """Prove it end to end: SSH and HTTP reach each Pi through the VPS, and nothing more is open."""
    from pitunnel.roles.pi.verify import print_reports
    from pitunnel.roles.site import verify as run_verify

    reports = _collect(run_verify, print_reports, flags)
    if not reports or not all(r.passed for r in reports):
        raise Exit("verify: some checks failed (hints above)", code=1)


@provisioning_task()
def provision(c: Context, flags: Flags) -> None:
    """provision-vps and provision-pi in one run, with one recap.

    The Pis' base step (autossh, account, key) runs while the VPS converges; the rest once it is done."""
    from pitunnel.roles.site import provision as site

    run_play(site, flags)


@provisioning_task(flags=("inventory", "limit", "prompt_for_login_password", "prompt_for_sudo_password"))
def status(c: Context, flags: Flags) -> None:
    """Each tunnel: up or down, since when, how often ssh (re)connected, and the unit's restarts."""
    from pitunnel.roles.pi.status import print_status
    from pitunnel.roles.site import status as run_status

    _collect(run_status, print_status, flags)


# -p is --purge here and the password prompts are -r and -o, unlike every other task (issue 13)
@provisioning_task(help={"purge": "also purge the packages the roles installed (autossh, nginx)"},
                   shorts={"prompt_for_login_password": "r", "prompt_for_sudo_password": "o"})
def teardown(c: Context, flags: Flags, purge: bool = False) -> None:
    """Remove everything provision-vps and provision-pi added, on both sides (packages stay unless --purge)."""
    from pitunnel.roles.site import teardown as site

    run_play(lambda play: site(play, purge=purge), flags)


@provisioning_task(help={"laptop_key": "instead: put this private key's .pub on every Pi, prove a login with it, "
                                        "then remove the laptop key pitunnel installed before"})
def rotate_keys(c: Context, flags: Flags, laptop_key: str = "") -> None:
    """New tunnel key per Pi, made on the Pi, the tunnel up throughout (or --laptop-key: the laptop's key).

    A rerun finishes an interrupted rotation. With --laptop-key NEW: the laptop's key on the Pis instead."""
    from pitunnel.roles.rotate import rotate_keys as site
    from pitunnel.roles.rotate import rotate_laptop_key

    if not laptop_key:
        run_play(site, flags)
        return
    new = Path(laptop_key).expanduser()
    problem = laptop_key_problem(new)
    if problem:
        raise Exit(f"--laptop-key {laptop_key}: {problem}", code=2)
    run_play(lambda play: rotate_laptop_key(play, new), flags)


def laptop_key_problem(key: Path) -> str | None:
    """Why this cannot be the laptop's new key, before any host is touched (None: it can)."""
    from pitunnel.sshkeys import BadPublicKey, parse_public_key

    pub = key.with_name(key.name + ".pub")
    if not key.is_file() or not pub.is_file():
        return f"needs the private key and {pub} (make them with ssh-keygen -t ed25519 -f {key})"
    if key.stat().st_mode & 0o077:
        return f"other users can read it: chmod 600 {key}"
    try:
        parse_public_key(pub.read_text())
    except BadPublicKey as exc:
        return f"{pub} is not a public key ({exc})"
    return None


@provisioning_task()
def rotate_vps_hostkey(c: Context, flags: Flags) -> None:
    """Planned VPS re-key: new host keys pinned on every Pi before sshd switches to them.

    The old keys are unpinned after; no tunnel drops."""
    from pitunnel.roles.rekey import rotate_vps_hostkey as site

    run_play(site, flags)


TASKS = (provision_vps, provision_pi, provision, verify, status, teardown, rotate_keys, rotate_vps_hostkey)
