"""`invoke rotate-keys --laptop-key NEW`: the laptop's key on every selected Pi replaced by NEW.

On each Pi, in order (pitunnel/reconcile.py drives it, reading the Pi's authorized_keys every time):

    ADD    NEW's public half beside the laptop key pitunnel installed
    SWAP   a fresh login with NEW alone proven (by the same route as every other login to that Pi, its
           host key checked), then the old key(s) removed
    DONE   the Pi accepts NEW alone (of pitunnel's laptop keys)

A rerun finishes an interrupted run, and the old key goes only after NEW alone has logged in.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pitunnel import facts, reconcile
from pitunnel.facts import file_fact
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.runner import converge
from pitunnel.sshkeys import parse_public_key
from pitunnel.roles.pi import keys as pi_keys


class Step(Enum):
    ADD = "authorise the new key beside the old one(s)"
    SWAP = "a fresh login with the new key alone, then the old key(s) removed"
    DONE = "done"
    REFUSED = "refused"


def next_step(keys: tuple[str, ...], line: str) -> tuple[Step, str]:
    """What to do next with the Pi's laptop keys `keys`, to have `line` alone."""
    if line not in keys:
        return Step.ADD, "the Pi does not accept the new key yet"
    if keys != (line,):
        return Step.SWAP, "the Pi accepts the old key(s) too"
    return Step.DONE, ""


def after(keys: tuple[str, ...], step: Step, line: str) -> tuple[str, ...]:
    """The keys a step leads to when it succeeds."""
    return (*keys, line) if step is Step.ADD else (line,) if step is Step.SWAP else keys


class LaptopKey(reconcile.Flow[tuple[str, ...], Step]):
    """One Pi's laptop key rotation: its state is the laptop keys pitunnel installed there."""

    prefix, whole, cap = "laptop key", "laptop key rotation", 4

    def __init__(self, play: Play, remote: Remote, new_key: Path, line: str) -> None:
        super().__init__(play.reporter)
        self.play, self.remote, self.new_key, self.line = play, remote, new_key, line
        self.pi = play.inventory.pis[remote.name]
        self.host = self.pi.name

    def read(self) -> tuple[str, ...]:
        found = facts.read(self.remote, file_fact(pi_keys.laptop_keys_path(self.pi)))
        return tuple(pi_keys.laptop_keys(found.content.decode(errors="replace") if found.exists else ""))

    def next_step(self, state: tuple[str, ...], started: bool) -> tuple[Step, str]:
        return next_step(state, self.line)

    def after(self, state: tuple[str, ...], step: Step) -> tuple[str, ...]:
        return after(state, step, self.line)

    def finished(self, state: tuple[str, ...]) -> tuple[str, str]:
        return "laptop key rotated", (f"{self.pi.user}@{self.pi.name} accepts {self.new_key} alone (of pitunnel's "
                                      "laptop keys): set laptop_key (and key) to it in the inventory")

    def apply(self, step: Step, state: tuple[str, ...]) -> None:
        """Each step reports itself (its file's change, the login's proof); in check mode it changes nothing."""
        mode = self.play.options.mode
        if step is Step.ADD:
            converge(self.remote, [pi_keys.laptop_keys_op(self.pi, [*state, self.line])], self.reporter, mode)
            return
        # NEW alone (never the agent's keys, the old one among them), by the route this run takes
        title = "laptop key: a fresh login with the new key alone"
        why = self.remote.proves_key(self.new_key)
        if why is not None:
            raise reconcile.failed(self.reporter, self.host, title, f"the old key stays authorised: {why}")
        route = f"through {self.remote.gateway_name}'s tunnel" if self.remote.through_tunnel else "direct"
        self.reporter.line(self.host, "ok", title, f"{self.new_key} ({route}; no agent, no other key, no password)")
        converge(self.remote, [pi_keys.laptop_keys_op(self.pi, [self.line])], self.reporter, mode)

    def planned(self, state: tuple[str, ...], step: Step, why: str) -> bool:
        """Check mode: the first step as it would change the file (the proof's login changes nothing), then
        what follows in a note."""
        if step is Step.DONE:
            self.reporter.line(self.host, "ok", *self.finished(state))
            return False
        self.apply(step, state)
        if step is Step.ADD:
            self.reporter.note(self.host, "then: a fresh login with the new key, then the old key(s) removed")
        return False


def rotate_laptop_key(play: Play, new_key: Path) -> None:
    """`invoke rotate-keys --laptop-key NEW`: every selected Pi, in parallel."""
    line = parse_public_key(new_key.with_name(new_key.name + ".pub").read_text()).line
    applied = reconcile.Applied()
    play.each_selected(play.inventory.pis.values(),
                       lambda remote: reconcile.reconcile(LaptopKey(play, remote, new_key, line),
                                                          check=play.options.check, applied=applied))
