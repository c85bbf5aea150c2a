"""pitunnel/confirm.py: what teardown and migrate say they will remove, per host, and the question itself, with
a stand-in terminal (the pty test in test_cli_safe.py proves it on a real one, before any connection)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from invoke import Exit

from pitunnel import failures
from pitunnel.confirm import PURGED_VPS, confirm, migrate_plan, selected_pis, teardown_plan
from tests.unit.fake_hosts import load

INVENTORY = """
settings: {laptop_key: null, known_hosts: kh}
vps:
  old: {address: 203.0.113.10}
  new: {address: 198.51.100.20}
pis:
  pi1: {address: 10.0.0.1, vps: old, tunnels: {ssh: {type: ssh, remote_port: 20022}}}
  pi2: {address: 10.0.0.2, vps: old, tunnel_user: pi, user: pi, tunnels: {ssh: {type: ssh, remote_port: 20023}}}
  pi3: {address: 10.0.0.3, vps: [old, new], tunnels: {ssh: {type: ssh, remote_port: 20024}}}
"""

PI1 = ("pi1 (Pi): its tunnel units (to old), their watchdog, pitunnel's files and sshd drop-ins, the tunnel account "
       "pitunnel or its key")


class Terminal(io.StringIO):
    """A stdin that is (or is not) a terminal, with the user's answer in it."""

    def __init__(self, answer: str, *, tty: bool = True) -> None:
        super().__init__(answer)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class Interrupted(Terminal):
    def readline(self, size: int | None = -1) -> str:
        raise KeyboardInterrupt


def test_selected_pis_follow_the_limit_and_every_host_without_one(tmp_path: Path) -> None:
    inv = load(tmp_path, INVENTORY)
    pis, names = selected_pis(inv, "") or ([], frozenset())
    assert [p.name for p in pis] == ["pi1", "pi2", "pi3"] and names == {"old", "new", "pi1", "pi2", "pi3"}
    pis, names = selected_pis(inv, " pi1 , new ") or ([], frozenset())
    assert [p.name for p in pis] == ["pi1"] and names == {"pi1", "new"}
    assert selected_pis(inv, "nosuch") is None


def test_teardown_of_everything_names_each_pi_and_each_vps_whole(tmp_path: Path) -> None:
    inv = load(tmp_path, INVENTORY)
    vps = ("{} (VPS): the tunnel account pitunnel with every Pi's key, its sshd Match block, the reaper, pitunnel's "
           "Nginx sites and metrics")
    assert teardown_plan(inv, "", purge=False) == [
        PI1,
        "pi2 (Pi): its tunnel units (to old), their watchdog, pitunnel's files and sshd drop-ins, the tunnel account "
        "pi or its key",
        "pi3 (Pi): its tunnel units (to old, new), their watchdog, pitunnel's files and sshd drop-ins, the tunnel "
        "account pitunnel or its key",
        vps.format("old"), vps.format("new")]
    purged = teardown_plan(inv, "pi1,old", purge=True)
    assert purged == [PI1 + ", the autossh package", vps.format("old") + f", {PURGED_VPS}"]


def test_teardown_of_some_pis_takes_only_their_keys_off_their_vpses(tmp_path: Path) -> None:
    inv = load(tmp_path, INVENTORY)
    assert teardown_plan(inv, "pi1,pi3", purge=False)[2:] == [
        "old (VPS): the keys of pi1, pi3 (its tunnel account and the other Pis stay)",
        "new (VPS): the keys of pi3 (its tunnel account and the other Pis stay)"]
    assert teardown_plan(inv, "nosuch", purge=False) == []


def test_migrate_names_the_moving_pis_the_old_vps_and_the_inventory(tmp_path: Path) -> None:
    inv = load(tmp_path, INVENTORY)
    moving = ["{p} (Pi): its tunnel moves from old to new; its unit to old is removed once it is verified through new"
              .format(p=p) for p in ("pi1", "pi2")]
    assert migrate_plan(inv, "", "new", keep_old=False) == [
        *moving, "old (VPS): its pitunnel side (tunnel account, sshd Match block, Nginx sites) is removed once no Pi "
                 "is left on it", f"{inv.path}: rewritten to new (hosts.yml.bak kept)"]
    assert migrate_plan(inv, "pi1", "new", keep_old=True) == [
        moving[0], "old (VPS): its pitunnel side stays (--keep-old)", f"{inv.path}: rewritten to new (hosts.yml.bak kept)"]
    assert migrate_plan(inv, "pi3", "new", keep_old=False) == []  # on both already: nothing moves
    assert migrate_plan(inv, "", "nowhere", keep_old=False) == [] and migrate_plan(inv, "x", "new", keep_old=False) == []


def test_yes_check_or_nothing_to_remove_asks_nothing() -> None:
    out = io.StringIO()
    for yes, check, plan in ((True, False, ["a"]), (False, True, ["a"]), (False, False, [])):
        confirm("teardown", plan, yes=yes, check=check, stdin=Terminal("", tty=False), out=out)
    assert out.getvalue() == ""


@pytest.mark.parametrize("answer", ["y\n", "YES\n", " Yes \n"])
def test_a_yes_on_the_terminal_goes_on_after_listing_what_goes(answer: str) -> None:
    out = io.StringIO()
    confirm("teardown", ["pi1 (Pi): a", "old (VPS): b"], yes=False, check=False, stdin=Terminal(answer), out=out)
    assert out.getvalue() == "teardown will remove:\n  pi1 (Pi): a\n  old (VPS): b\nGo on with teardown? [y/N] "


@pytest.mark.parametrize("answer", ["n\n", "\n", "", "yess\n", "sure\n"])
def test_anything_but_yes_touches_nothing_and_exits_3(answer: str) -> None:
    with pytest.raises(Exit) as stopped:
        confirm("migrate", ["a"], yes=False, check=False, stdin=Terminal(answer), out=io.StringIO())
    assert (stopped.value.code, stopped.value.message) == (failures.USAGE, "migrate: not confirmed, nothing was touched")


def test_no_terminal_and_no_yes_is_refused_before_asking() -> None:
    out = io.StringIO()
    with pytest.raises(Exit) as stopped:
        confirm("teardown", ["a"], yes=False, check=False, stdin=Terminal("y\n", tty=False), out=out)
    assert stopped.value.code == failures.USAGE and out.getvalue() == ""
    assert stopped.value.message == ("teardown: asks before it removes anything, but there is no terminal to ask on: "
                                     "add --yes to run it unattended (nothing was touched)")


def test_ctrl_c_at_the_question_is_an_interruption_with_nothing_touched() -> None:
    with pytest.raises(Exit) as stopped:
        confirm("teardown", ["a"], yes=False, check=False, stdin=Interrupted(""), out=io.StringIO())
    assert (stopped.value.code, stopped.value.message) == (failures.INTERRUPTED, "\ninterrupted: no host was touched")
