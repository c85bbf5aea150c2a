"""The whole site in one play: every VPS and every Pi, provisioned or torn down together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pitunnel.play import Play
from roles.pi import steps as pi
from roles.vps import steps as vps


def provision(play: Play) -> None:
    """`invoke provision`: the Pis' base step (autossh, tunnel account, key made on the Pi) needs nothing
    from the VPS, so it runs while the VPS converges; the Pis' keys and tunnels follow once it is done."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        based = pool.submit(pi.base, play)
        vps.provision(play)
        pis = based.result()
    pi.finish(play, pis)


def teardown(play: Play, *, purge: bool) -> None:
    """`invoke teardown`: the Pis first (their keys come off the VPS), then the VPS."""
    pi.teardown(play, purge=purge)
    vps.teardown(play, purge=purge)
