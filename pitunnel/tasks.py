"""pitunnel's own tasks: provision-vps, provision-pi, provision, verify, status and teardown.

Each takes the shared flags (pitunnel.cli.Flags) as one `flags` argument; tasks.py at the top of the
checkout puts them into `invoke`'s namespace.
"""

from __future__ import annotations

from collections.abc import Callable
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


@provisioning_task()
def rotate_keys(c: Context, flags: Flags) -> None:
    """Replace each Pi's tunnel key with a new one made on the Pi, the tunnel up throughout; a rerun finishes an
    interrupted rotation."""
    from pitunnel.roles.rotate import rotate_keys as site

    run_play(site, flags)


TASKS = (provision_vps, provision_pi, provision, verify, status, teardown, rotate_keys)
