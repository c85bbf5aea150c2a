"""The tunnel key's whole life on a real file system: its fact script read by `sh`, its plan's commands run by
`sh` with the real ssh-keygen (runuser played by a stub that runs the command as us): made when absent, kept
when whole, its public half derived again when only that is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pitunnel.facts import gather
from pitunnel.ops import KeyPair, KeyState
from tests.unit.test_ops import LocalShell, apply, me


@pytest.fixture
def runuser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "runuser").write_text('#!/bin/sh\n[ "$1" = -u ] && [ "$3" = -- ] || exit 9\nshift 3\nexec "$@"\n')
    (bin_dir / "runuser").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def state(op: KeyPair) -> tuple[KeyState, list[str], str]:
    facts = gather(LocalShell(), op.facts())
    plan = op.plan(facts)
    return facts.value(op.fact), plan.commands, plan.reason


def test_the_key_is_made_kept_and_its_public_half_derived_again(tmp_path: Path, runuser: Path) -> None:
    owner, _ = me()
    key = tmp_path / "home" / ".ssh" / "pitunnel_ed25519"
    op = KeyPair(str(key), owner=owner, comment="pitunnel:pi1")
    found, commands, reason = state(op)
    assert found == KeyState(False, None) and reason == "generate on the host"
    assert apply(commands).returncode == 0
    assert oct(key.parent.stat().st_mode & 0o777) == "0o700" and key.exists()
    line = key.with_name(key.name + ".pub").read_text().strip()
    assert line.startswith("ssh-ed25519 ") and line.endswith(" pitunnel:pi1")
    found, commands, reason = state(op)
    assert found == KeyState(True, line) and found.kept and (commands, reason) == ([], "exists (kept)")
    key.with_name(key.name + ".pub").unlink()
    found, commands, reason = state(op)
    assert found == KeyState(True, None) and reason == "public half missing: derive it from the private key (kept)"
    assert commands == [f"runuser -u {owner} -- sh -c 'ssh-keygen -y -f {key} > {key}.pub'"]
    assert apply(commands).returncode == 0
    derived = key.with_name(key.name + ".pub").read_text().split()
    assert derived[:2] == line.split()[:2]  # the same key: nothing to send to the VPS again


def test_a_public_half_that_is_one_word_is_not_kept() -> None:
    assert KeyState(True, "garbage").kept is False and KeyState(True, "ssh-ed25519 AAAA").kept
    from pitunnel.ops import key_state
    assert key_state("PUB ssh-ed25519 AAAA c\n") == KeyState(True, "ssh-ed25519 AAAA c")
    assert key_state("PUB") == KeyState(True, "") and key_state("NOPUB") == KeyState(True, None)
    assert key_state("ABSENT") == KeyState(False, None) and key_state("") == KeyState(False, None)


# ------------------------------------------------------------------------------------ packages, exactly


def test_package_lists_are_fetched_only_once_older_than_six_hours() -> None:
    from pitunnel.ops import APT_AGE, APT_FRESH_SECONDS, Packages
    from tests.unit.test_ops import facts_of
    op = Packages(("autossh", "nginx"))
    assert op.title == "packages autossh nginx"

    def plan(age: str) -> tuple[list[str], str]:
        done = op.plan(facts_of(("pkgs:autossh nginx", "autossh installed\nnginx not-installed"), (APT_AGE, age)))
        return done.commands, done.reason

    fresh, reason = plan(str(APT_FRESH_SECONDS))
    assert reason == "install nginx" and not fresh[0].startswith("apt-get update")
    stale, reason = plan(str(APT_FRESH_SECONDS + 1))
    assert reason == "install nginx (package lists stale: update first)" and stale[0].startswith("apt-get update")
    assert plan("")[1].endswith("(package lists stale: update first)")  # no lists at all
    assert "apt-get install -y -q --no-install-recommends nginx >/dev/null" in fresh[0]
    both = Packages(("autossh", "nginx")).plan(facts_of(("pkgs:autossh nginx", "autossh not-installed\nnginx x"), (APT_AGE, "0")))
    assert both.reason == "install autossh, nginx" and "--no-install-recommends autossh nginx >/dev/null" in both.commands[0]
    assert any("for n in autossh nginx; do" in c for c in both.commands)  # both recorded as pitunnel's


def test_purge_only_what_pitunnel_installed_and_say_what_stays() -> None:
    from pitunnel.ops import PackagesAbsent, record_fact
    from tests.unit.test_ops import facts_of
    op = PackagesAbsent(("autossh", "nginx", "gone"))
    assert op.title == "packages purged autossh nginx gone"
    plan = op.plan(facts_of(("pkgs:autossh nginx gone", "autossh installed\nnginx installed"),
                            (record_fact("packages"), "")))
    assert plan.commands == [] and plan.reason == ("kept autossh, nginx: installed before pitunnel (no record that "
                                                   "pitunnel installed it)")
    plan = op.plan(facts_of(("pkgs:autossh nginx gone", "autossh installed\nnginx config-files\ngone not-installed"),
                            (record_fact("packages"), "autossh\nnginx\ngone")))
    assert plan.reason == "purge autossh, nginx"  # config files left behind count: purge takes them
    assert plan.commands[0] == "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q --autoremove autossh nginx >/dev/null"
    assert any("-e autossh -e nginx" in c for c in plan.commands)  # both taken off the record
