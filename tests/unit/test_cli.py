"""The flags every provisioning task shares: declared once (pitunnel.taskkit.Flags, with their help and short
flags), added to each task's signature by `provisioning_task`, and handed to the task as one Flags."""

from __future__ import annotations

import copy
import dataclasses

from invoke import Collection, Context, Program

from pitunnel import tasks
from pitunnel.taskkit import FLAGS, Flags, provisioning_task
from pitunnel.play import Options


def test_every_flag_has_help_and_its_own_short_flag() -> None:
    shorts = [f.metadata["short"] for f in dataclasses.fields(Flags)]
    assert all(f.metadata["help"] for f in dataclasses.fields(Flags))
    assert all(len(s) == 1 for s in shorts) and len(set(shorts)) == len(shorts)
    assert set(FLAGS) == {"inventory", "check", "diff", "limit", "accept_new_host_keys", "accept_changed_host_key",
                          "prompt_for_login_password", "prompt_for_sudo_password", "verbose", "json", "forks"}


def test_flags_become_the_engines_options() -> None:
    got = Flags(inventory="x.yml", check=True, limit=" pi1, ,pi2", prompt_for_sudo_password=True).options()
    assert got == Options(check=True, diff=False, limit=frozenset({"pi1", "pi2"}), accept_new_host_keys=False,
                          prompt_login_password=False, prompt_sudo_password=True)


def test_parsed_flags_reach_the_task_as_one_flags_beside_its_own_arguments() -> None:
    seen: list[tuple[Flags, bool]] = []

    @provisioning_task(help={"purge": "purge"})
    def probe(c: Context, flags: Flags, purge: bool = False) -> None:
        """A task with the shared flags and one of its own."""
        seen.append((flags, purge))

    program = Program(namespace=Collection(probe), binary="invoke")
    program.run(["invoke", "probe", "-i", "x.yml", "-c", "-d", "-l", "pi1", "-a", "-p", "-r", "-u"], exit=False)
    assert seen == [(Flags(inventory="x.yml", check=True, diff=True, limit="pi1", accept_new_host_keys=True,
                           prompt_for_login_password=True, prompt_for_sudo_password=True), True)]
    program.run(["invoke", "probe"], exit=False)
    assert seen[1] == (Flags(), False)  # -p is the shared flag's, so --purge got the next free letter, -u


def test_a_task_called_from_python_gets_the_defaults_for_flags_not_given() -> None:
    seen: list[Flags] = []

    @provisioning_task(flags=("inventory", "limit"))
    def probe(c: Context, flags: Flags) -> None:
        seen.append(flags)

    probe(Context(), inventory="lab.yml")
    assert seen == [Flags(inventory="lab.yml")]
    assert [a.name for a in probe.get_arguments()] == ["inventory", "limit"]


def test_every_provisioning_task_takes_shared_flags_only_from_flags() -> None:
    for task in tasks.TASKS:
        names = {a.attr_name or a.name for a in copy.deepcopy(task).get_arguments()}  # it uses up task.help
        assert names - {"purge", "laptop_key", "to", "keep_old", "pi", "release_ports", "yes", "boot", "ssid", "country",
                        "passphrase_file", "expires", "write", "pis"} <= set(FLAGS), task.name  # the only task-own flags
