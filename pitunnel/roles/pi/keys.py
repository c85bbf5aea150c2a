"""A Pi's tunnel keys while `invoke rotate-keys` runs: the key in use, the next one (made on the Pi, its
private half never leaves it) and the old one (kept until the VPS no longer accepts it).

Which of the three exist is the rotation's state on this side; roles/rotate.py reads it and decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pitunnel.facts import Fact, FileState, read
from pitunnel.inventory import PiSpec
from pitunnel.ops import File, q
from pitunnel.remote import Remote
from pitunnel.sshkeys import BadPublicKey, PublicKey, parse_public_key
from pitunnel.roles.pi.locations import home_of, key_comment, key_path, unit
from pitunnel.roles.pi.role import PI_DEFAULTS

SLOTS = ("current", "next", "old")
SUFFIX = {"current": "", "next": ".next", "old": ".old"}


@dataclass(frozen=True)
class PiKeys:
    """The public halves of the tunnel keys on the Pi, each derived from its private half (so a .pub
    left behind by an interrupted run never counts); None where that key is not there."""

    current: PublicKey | None
    next: PublicKey | None
    old: PublicKey | None


def _derived(output: str) -> PiKeys:
    found: dict[str, PublicKey | None] = dict.fromkeys(SLOTS)
    for line in output.splitlines():
        slot, _, text = line.partition(" ")
        if slot in found and text.strip() != "-":
            try:
                found[slot] = parse_public_key(text)
            except BadPublicKey:
                found[slot] = None  # a half-written private key: as good as none (the next step remakes it)
    return PiKeys(found["current"], found["next"], found["old"])


def keys_fact(pi: PiSpec) -> Fact[PiKeys]:
    k = key_path(pi)
    script = "".join(f"if [ -f {q(k + SUFFIX[s])} ] && p=$(ssh-keygen -y -f {q(k + SUFFIX[s])} 2>/dev/null); "
                     f"then echo \"{s} $p\"; else echo '{s} -'; fi\n" for s in SLOTS)
    return Fact(f"tunnel-keys:{pi.name}", script, _derived)


def read_keys(remote: Remote, pi: PiSpec) -> PiKeys:
    return read(remote, keys_fact(pi))


def make_next(pi: PiSpec) -> str:
    """A new key beside the one in use, made by the tunnel account on the Pi (anything half-made by an
    interrupted run is replaced)."""
    n = q(key_path(pi) + ".next")
    return (f"rm -f {n} {n}.pub\n"
            f"runuser -u {q(pi.tunnel_user)} -- ssh-keygen -q -t ed25519 -N '' -C {q(key_comment(pi))} -f {n}\n")


def switch(pi: PiSpec) -> str:
    """The next key becomes the one the tunnel's ssh config names; the one in use is kept as .old. Each
    move is a rename, so at any moment the configured path holds a key the VPS accepts (a rerun after
    an interruption repeats what is left)."""
    k = q(key_path(pi))
    return (f"set -e\n[ -f {k}.next ] || exit 0\n"
            f"[ -f {k}.old ] || ln -f {k} {k}.old\n"
            f"mv -f {k}.next {k}\n"
            f"runuser -u {q(pi.tunnel_user)} -- sh -c 'ssh-keygen -y -f {k} > {k}.pub.tmp' && mv -f {k}.pub.tmp {k}.pub\n"
            f"rm -f {k}.next.pub\n")


def reconnect(pi: PiSpec) -> str:
    """The tunnel to each of the Pi's VPSes reconnects (with the key the config names now)."""
    return "".join(f"systemctl restart {unit(v)}\n" for v in pi.all_vps)


def drop_old(pi: PiSpec) -> str:
    k = q(key_path(pi))
    return f"rm -f {k}.old {k}.old.pub\n"


# ------------------------------------------------------------------------ the laptop's key on the Pi
def laptop_keys_path(pi: PiSpec) -> str:
    return f"{home_of(pi.user)}/.ssh/authorized_keys"


def laptop_keys(text: str) -> list[str]:
    """The laptop keys (`type blob`) pitunnel put in the login user's authorized_keys (its marker)."""
    return [" ".join(line.split()[:2]) for line in text.splitlines()
            if len(line.split()) >= 3 and line.split()[-1] == PI_DEFAULTS["laptop_key_marker"]]


def laptop_keys_op(pi: PiSpec, keys: Sequence[str]) -> File:
    """The login user's authorized_keys with exactly `keys` as pitunnel's laptop keys; every other line
    (the user's own) kept as it is, in its place."""
    marker = PI_DEFAULTS["laptop_key_marker"]

    def render(state: FileState) -> str:
        lines = state.content.decode(errors="replace").splitlines() if state.exists else []
        out = [line for line in lines if not (len(line.split()) >= 3 and line.split()[-1] == marker)]
        out += [f"{k} {marker}" for k in keys]
        return "".join(line + "\n" for line in out)

    return File(laptop_keys_path(pi), render, owner=pi.user, group=pi.user, mode=0o600,
                title="laptop's keys for passwordless login")
