"""--limit's patterns against an inventory with a revoked Pi (pitunnel.play `resolve_limit`): whole messages, and
a `!` pattern naming a revoked Pi (left out already) next to one that names nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitunnel.inventory import Inventory, Revoked
from pitunnel.play import BadLimit, resolve_limit
from tests.unit.fake_hosts import load
from tests.unit.test_revoke import record
from tests.unit.test_site import INVENTORY


@pytest.fixture()
def inv(tmp_path: Path) -> Inventory:
    record(tmp_path, Revoked("alpha", "2026-12-06T05:00:00Z"))
    return load(tmp_path, INVENTORY)


def test_a_bang_on_a_revoked_pi_is_no_error_as_it_is_left_out_already(inv: Inventory) -> None:
    assert resolve_limit(frozenset({"!alpha"}), inv) == {"main", "spare", "beta", "gamma"}
    assert resolve_limit(frozenset({"pis", "!alpha", "!beta"}), inv) == {"gamma"}


def test_every_bang_pattern_is_checked_also_after_a_revoked_one(inv: Inventory) -> None:
    with pytest.raises(BadLimit) as caught:
        resolve_limit(frozenset({"!alpha", "!nope"}), inv)
    assert str(caught.value) == (f"--limit '!nope' matches no host of {inv.path} (hosts: main, spare, beta, gamma; "
                                 "also `vps`, `pis`, globs like 'pi*', and !PATTERN to leave hosts out)")


def test_a_limit_that_leaves_no_host_names_every_pattern_and_the_fix(inv: Inventory) -> None:
    with pytest.raises(BadLimit) as caught:
        resolve_limit(frozenset({"beta", "!pis", "!main", "!spare"}), inv)
    assert str(caught.value) == ("--limit '!main,!pis,!spare,beta' leaves no host: every host it selects is excluded by a "
                                 "`!` pattern. Fix: exclude fewer hosts")


def test_naming_a_revoked_pi_says_which_tasks_take_it_back(inv: Inventory) -> None:
    with pytest.raises(BadLimit) as caught:
        resolve_limit(frozenset({"alpha"}), inv)
    assert str(caught.value) == ("--limit 'alpha': alpha is revoked (since 2026-12-06T05:00:00Z): every task leaves it "
                                 "out but provision-pi and provision, which take it back only with a new key made on "
                                 "it (docs/operations.md)")
