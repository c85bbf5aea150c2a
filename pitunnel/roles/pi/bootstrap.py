"""An enrolled Pi's bootstrap tunnel (pitunnel enroll: the image's own `ssh -NR` with a key made on the laptop),
retired by provision-pi once the Pi's own tunnel (autossh, a key made on the Pi) is in place: its units, key,
files and account gone from the Pi, then its key from the VPSes (roles/site.py), its sessions ended there.

The laptop reaches an enrolled Pi through that very tunnel: the bootstrap goes a moment after the step has
heard back (ops.Later), its listeners then free for the Pi's own tunnel, and the connection is opened again
through that one."""

from __future__ import annotations

from pitunnel.inventory import PiSpec
from pitunnel.ops import Absent, Later, Op, Service, UserAbsent, arm_later
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.runner import converge
from pitunnel.roles.pi.locations import bootstrap_unit
from pitunnel.roles.pi.role import PI_DEFAULTS
from pitunnel.roles.pi.steps import handlers

RETIRE_AFTER = 2  # seconds after the step has answered: the bootstrap ssh stops, freeing its listeners


def retire_ops(pi: PiSpec, *, riding: bool) -> list[Op]:
    """The bootstrap's instances stopped, its unit, key and files removed, its account gone; all of it once
    this run has left the Pi when the run's connection rides the bootstrap tunnel (`riding`)."""
    def later(op: Op) -> Op:
        return Later(op) if riding else op

    return [
        *(later(Service(bootstrap_unit(v), enabled=False, running=False, title=f"{v}: bootstrap tunnel retired"))
          for v in pi.all_vps),
        later(Absent(f"/etc/systemd/system/{PI_DEFAULTS['bootstrap_unit']}", notify=("daemon-reload",))),
        later(Absent(PI_DEFAULTS["bootstrap_dir"])),
        later(UserAbsent(PI_DEFAULTS["bootstrap_user"])),
    ]


def retire(play: Play, remote: Remote) -> None:
    """Retire the Pi's bootstrap tunnel (its own tunnel listens on every VPS by now). Through that tunnel,
    the Pi does it on its own a moment after this step, and the connection is opened again through the Pi's
    own tunnel (which takes the listeners over within its restart delay)."""
    pi = play.inventory.pis[remote.name]
    riding = remote.through_tunnel
    done = converge(remote, retire_ops(pi, riding=riding), play.reporter, play.options.mode,
                    handlers(remote, vpses=pi.all_vps))
    if not riding or play.options.check or not done.changed:
        return
    remote.run(arm_later(RETIRE_AFTER))
    play.reporter.note(pi.name, f"its bootstrap tunnel stops in {RETIRE_AFTER}s, and with it this connection: "
                                "reconnecting through its own tunnel")
    remote.path_restarts(RETIRE_AFTER + 1, within=PI_DEFAULTS["listen_wait_seconds"])
    remote.run("true")  # through the Pi's own tunnel now: the bootstrap's listeners are its own
