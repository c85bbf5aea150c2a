"""What pitunnel made on a host (accounts, packages), recorded on the host when it made it."""

from __future__ import annotations

from collections.abc import Sequence

from ..facts import Fact, Facts
from .shell import q


# What pitunnel itself made on a host, recorded when it made it: `users` and `packages`, one name a line.
# Teardown removes and purges only what is recorded there (or, for accounts made by earlier versions,
# marked with one of pitunnel's comments), never what was on the host before.
STATE_DIR = "/var/lib/pitunnel-state"
OWN_COMMENTS = ("pitunnel", "pitunnel reverse tunnel", "pitunnel reverse tunnels")


def _names(output: str) -> frozenset[str]:
    return frozenset(output.split())


def record_fact(kind: str) -> Fact[frozenset[str]]:
    """The names recorded in STATE_DIR/kind (what pitunnel made of that kind on this host)."""
    return Fact(f"record:{kind}", f"cat {STATE_DIR}/{kind} 2>/dev/null || true", _names)


def recorded(facts: Facts, kind: str) -> frozenset[str]:
    return facts.value(record_fact(kind))


def record_commands(kind: str, names: Sequence[str]) -> list[str]:
    """Add `names` to STATE_DIR/kind (root-only: nobody else can claim something is pitunnel's)."""
    path = q(f"{STATE_DIR}/{kind}")
    return [f"mkdir -p {STATE_DIR} && chmod 700 {STATE_DIR}",
            f"for n in {' '.join(q(n) for n in names)}; do grep -qxF \"$n\" {path} 2>/dev/null || "
            f"echo \"$n\" >> {path}; done"]


def unrecord_commands(kind: str, names: Sequence[str]) -> list[str]:
    """Take `names` off STATE_DIR/kind; the file and the directory go when empty."""
    path = q(f"{STATE_DIR}/{kind}")
    drop = " ".join(f"-e {q(n)}" for n in names)
    return [f"if [ -f {path} ]; then grep -vxF {drop} {path} > {path}.new || true; mv -f {path}.new {path}; "
            f"[ -s {path} ] || rm -f {path}; rmdir {STATE_DIR} 2>/dev/null || true; fi"]
