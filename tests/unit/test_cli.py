"""The flags every provisioning task shares: one list, typed on the way to run_play."""

from __future__ import annotations

import typing

from pitunnel.cli import COMMON_HELP, Flags, flags


def test_the_typed_flags_are_exactly_the_documented_ones() -> None:
    assert set(typing.get_type_hints(Flags)) == set(COMMON_HELP)


def test_flags_keep_the_shared_arguments_only_with_their_types() -> None:
    scope = {"c": object(), "purge": True, "inventory": "inventory/lab.yml", "check": True, "diff": False,
             "limit": "pi1,pi2", "accept_new_host_keys": False, "prompt_for_login_password": False,
             "prompt_for_sudo_password": True}
    got = flags(scope)
    assert got == {"inventory": "inventory/lab.yml", "check": True, "diff": False, "limit": "pi1,pi2",
                   "accept_new_host_keys": False, "prompt_for_login_password": False,
                   "prompt_for_sudo_password": True}
