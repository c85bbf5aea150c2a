"""What a provisioning task does around its play: which inventory it reads, how a missing or bad one ends the
run before any host is touched, the exit code, and what verify and status print and return."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from invoke import Context, Exit

from pitunnel import failures, taskkit, tasks
from pitunnel.play import Play
from pitunnel.roles.probes.report import PathReport
from pitunnel.roles.probes.status import TunnelStatus
from pitunnel.runner import StepFailed

INVENTORY = """
settings: {laptop_key: null, known_hosts: kh}
vps:
  main: {address: 203.0.113.1}
pis:
  alpha:
    address: 10.0.0.2
    vps: main
    tunnels:
      ssh: {type: ssh, remote_port: auto}
"""


@pytest.fixture()
def hosts(tmp_path: Path) -> Path:
    file = tmp_path / "hosts.yml"
    file.write_text(textwrap.dedent(INVENTORY).lstrip())
    return file


def test_which_inventory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default, lab = tmp_path / "hosts.yml", tmp_path / "lab.yml"
    monkeypatch.setattr(taskkit, "DEFAULT_INVENTORY", default)
    monkeypatch.setattr(taskkit, "LAB_INVENTORY", lab)
    monkeypatch.setattr(taskkit, "CHECKOUT", True)
    monkeypatch.delenv(taskkit.ENV_INVENTORY, raising=False)
    assert taskkit.resolve_inventory("mine.yml") == (Path("mine.yml"), "-i")
    assert taskkit.resolve_inventory(None)[0] == default  # neither exists: the one to write
    lab.write_text("x")
    assert taskkit.resolve_inventory(None)[0] == lab  # the lab's, while there is no hosts.yml
    monkeypatch.setenv(taskkit.ENV_INVENTORY, "env.yml")
    assert taskkit.resolve_inventory(None) == (Path("env.yml"), "$PITUNNEL_INVENTORY")  # the variable before files
    assert taskkit.resolve_inventory("mine.yml")[0] == Path("mine.yml")  # -i before the variable
    monkeypatch.delenv(taskkit.ENV_INVENTORY)
    default.write_text("x")
    assert taskkit.resolve_inventory("")[0] == default  # hosts.yml wins once it exists
    assert taskkit.DEFAULT_INVENTORY.name == "hosts.yml"


def test_a_missing_inventory_ends_the_run_with_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(Exit) as exc:
        taskkit.load(str(tmp_path / "none.yml"), check=False)
    assert exc.value.code == failures.USAGE == 3
    assert exc.value.message == (f"no inventory at {tmp_path / 'none.yml'} (from -i). Fix: `pitunnel init -i "
                                 f"{tmp_path / 'none.yml'}` writes a first one there to fill in (or give yours with "
                                 "-i FILE or $PITUNNEL_INVENTORY)")  # issue 24: init, not the checkout's example


def test_a_bad_inventory_ends_the_run_with_its_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("vps: {main: {address: 203.0.113.1, port: 99999}}\npis: {}\n")
    with pytest.raises(Exit) as exc:
        taskkit.load(str(bad), check=False)
    assert exc.value.code == failures.USAGE and str(bad) in str(exc.value.message)
    assert "port" in str(exc.value.message)


def test_check_mode_allocates_ports_without_writing_them_down(hosts: Path) -> None:
    lock = hosts.with_name("hosts.ports.yml")
    inv = taskkit.load(str(hosts), check=True)
    assert inv.pis["alpha"].tunnels[0].remote_port > 0 and not lock.exists()
    taskkit.load(str(hosts), check=False)
    assert lock.exists()


def test_run_play_plays_the_body_and_exits_with_the_plays_code(hosts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Play] = []

    def body(play: Play) -> None:
        seen.append(play)
        play.reporter.recap("alpha")  # as each() does for every host it plays

    play = taskkit.run_play(body, taskkit.Flags(inventory=str(hosts), limit="alpha"))
    assert seen == [play] and play.options.limit == frozenset({"alpha"}) and not play.reporter.quiet
    with pytest.raises(Exit) as exc:  # a --limit that leaves the task no host: a usage error
        taskkit.run_play(lambda p: None, taskkit.Flags(inventory=str(hosts), limit="alpha"))
    assert exc.value.code == failures.USAGE and "works on none of them" in str(exc.value.message)
    assert taskkit.run_play(lambda p: None, taskkit.Flags(inventory=str(hosts)), quiet=True).reporter.quiet

    def fails(play: Play) -> None:
        play.each([play.inventory.pis["alpha"]], lambda remote: (_ for _ in ()).throw(StepFailed("no")))

    with pytest.raises(Exit) as exc:
        taskkit.run_play(fails, taskkit.Flags(inventory=str(hosts)))
    assert exc.value.code == failures.FAILED == 2
    assert "alpha" in capsys.readouterr().out  # the recap still printed


def test_verify_fails_the_run_unless_every_pi_passed(hosts: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import pitunnel.roles.probes.verify as probes
    good, bad = PathReport("alpha"), PathReport("beta")
    good.add("unit", True, "fine")
    bad.add("unit", False, "down", "start it")
    for reports, fails in (([good], False), ([good, bad], True), ([], True)):
        monkeypatch.setattr(probes, "verify", lambda play, r=reports: r)
        if fails:
            with pytest.raises(Exit) as exc:
                tasks.verify(Context(), inventory=str(hosts))
            assert exc.value.code == failures.FAILED
            assert "verify: some checks failed (hints above)" in capsys.readouterr().err
        else:
            tasks.verify(Context(), inventory=str(hosts))
            assert "some checks failed" not in capsys.readouterr().err
    monkeypatch.setattr(probes, "verify", lambda play: [good, bad])
    with pytest.raises(Exit):
        tasks.verify(Context(), inventory=str(hosts))
    assert "beta: FAIL" in capsys.readouterr().out


def test_status_prints_the_rows_gathered_before_a_failure(hosts: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import pitunnel.roles.probes.status as probes
    row = TunnelStatus("alpha", "ssh", "127.0.0.1:20000", True, "active", "today", 1, "now", 0)
    monkeypatch.setattr(probes, "status", lambda play: [row])
    tasks.status(Context(), inventory=str(hosts))
    out = capsys.readouterr().out
    assert "alpha" in out and "UP" in out

    def broken(play: Play) -> list[TunnelStatus]:
        raise KeyboardInterrupt

    monkeypatch.setattr(probes, "status", broken)
    with pytest.raises(Exit) as exc:  # Ctrl-C: the run stops with the shell's code, not a traceback
        tasks.status(Context(), inventory=str(hosts))
    assert exc.value.code == failures.INTERRUPTED == 130
    assert "listen on VPS" in capsys.readouterr().out  # the table, empty, still printed


@pytest.mark.parametrize(("task", "target"), [
    (tasks.provision_vps, "pitunnel.roles.site.provision_vps"), (tasks.provision_pi, "pitunnel.roles.site.provision_pi"),
    (tasks.provision, "pitunnel.roles.site.provision")])
def test_each_provisioning_task_runs_its_step(task: object, target: str, hosts: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[Play] = []
    monkeypatch.setattr(target, ran.append)
    task(Context(), inventory=str(hosts), check=True)  # type: ignore[operator]
    assert len(ran) == 1 and ran[0].options.check


def test_teardown_passes_purge(hosts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    monkeypatch.setattr("pitunnel.roles.site.teardown", lambda play, purge: seen.append(purge))
    tasks.teardown(Context(), inventory=str(hosts), yes=True)
    tasks.teardown(Context(), inventory=str(hosts), purge=True, yes=True)
    assert seen == [False, True]


def test_status_and_verify_run_quietly(hosts: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import pitunnel.roles.probes.status as probes
    row = TunnelStatus("alpha", "ssh", "127.0.0.1:20000", True, "active", "today", 1, "now", 0)

    def status(play: Play) -> list[TunnelStatus]:
        play.reporter.line("main", "ok", "listeners read")
        play.reporter.line("main", "changed", "something said")
        return [row]

    monkeypatch.setattr(probes, "status", status)
    tasks.status(Context(), inventory=str(hosts))
    out = capsys.readouterr().out
    assert "listeners read" not in out and "something said" in out and "UP" in out


def test_a_flag_carries_its_default_short_flag_and_help() -> None:
    made = taskkit.flag(3, "z", "how many")
    assert (made.default, dict(made.metadata)) == (3, {"short": "z", "help": "how many"})


def test_every_flag_reaches_the_engine() -> None:
    everything = taskkit.Flags(check=True, diff=True, limit="a", accept_new_host_keys=True, prompt_for_login_password=True,
                           prompt_for_sudo_password=True).options()
    assert (everything.check, everything.diff, everything.accept_new_host_keys, everything.prompt_login_password,
            everything.prompt_sudo_password) == (True, True, True, True, True)


def test_a_task_made_here_has_the_shared_flags_help_and_its_own_shorts() -> None:
    def body(c: Context, flags: taskkit.Flags, purge: bool = False) -> None:
        """A task."""

    task = taskkit.provisioning_task(help={"purge": "also purge"}, shorts={"prompt_for_login_password": "r"})(body)
    assert task.help["limit"] == taskkit.FLAGS["limit"].metadata["help"] and task.help["purge"] == "also purge"
    assert task.shorts["prompt_for_login_password"] == "r" and task.shorts["check"] == "c"


def test_check_mode_through_run_play_writes_no_lock_file(hosts: Path) -> None:
    taskkit.run_play(lambda play: None, taskkit.Flags(inventory=str(hosts), check=True))
    assert not hosts.with_name("hosts.ports.yml").exists()
    taskkit.run_play(lambda play: None, taskkit.Flags(inventory=str(hosts)))
    assert hosts.with_name("hosts.ports.yml").exists()


def test_the_lock_file_keeps_the_inventorys_order_in_block_style(tmp_path: Path) -> None:
    from pitunnel.inventory.ports import read_ports, write_ports
    lock = tmp_path / "hosts.ports.yml"
    write_ports(lock, {"zeta": {"pi2/web": 20001, "pi1/ssh": 20000}, "alpha": {"pi3/ssh": 20002}})
    assert lock.read_text(encoding="utf-8").splitlines()[2:] == [
        "zeta:", "  pi2/web: 20001", "  pi1/ssh: 20000", "alpha:", "  pi3/ssh: 20002"]
    assert lock.read_text().startswith("# Remote ports that pitunnel allocated")
    assert read_ports(lock) == ({"zeta": {"pi2/web": 20001, "pi1/ssh": 20000}, "alpha": {"pi3/ssh": 20002}}, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hosts.ports.yml"]  # the temporary file is gone
