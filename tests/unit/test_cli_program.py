"""The installed `pitunnel` as a program of its own (issue 24): its top level (help, list, version, completion,
none of Invoke's flags), task flags before the task name, wrong arguments as one line and exit 3 before any
host, --forks, `!` in --limit, -vv with secrets masked, --json on exit 3, and the smaller messages (the tab,
the passphrase). Loopback only, no lab."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from invoke import Collection

from pitunnel import failures, sshauth, sshdebug
from pitunnel.console import PitunnelProgram, flags_after_task, namespace
from pitunnel.inventory import InventoryError, load_inventory
from pitunnel.play import BadLimit, Options, Play, resolve_limit
from pitunnel.remote import Credentials, Remote, Unreachable
from pitunnel.report import Reporter
from tests.unit.sshd_fake import FakeSshd
from tests.unit.test_cli_errors import free_port, inv_file, quick, spec  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(sys.executable).with_name("pitunnel")
INVOKE_CORE = ("--echo", "--pty", "--warn-only", "--hide", "-T", "--command-timeout", "--write-pyc", "--config",
               "--prompt-for-sudo-password", "--dry", "--debug", "--list-depth", "--list-format", "--collection",
               "--search-root", "--no-dedupe", "-e,", "-w,", "-R,", "-D ", "-F ", "-l ", "-d,", "-p,", "-f ")


def run(*args: str) -> tuple[int, str, str]:
    """`pitunnel ARGS` in this process (a fresh PitunnelProgram): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            PitunnelProgram(namespace=namespace(), name="pitunnel", binary="pitunnel", version="9").run(
                ["pitunnel", *args])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------------------------ point 6


def test_the_installed_command_offers_help_list_version_and_completion_and_none_of_invokes_flags(
        tmp_path: Path) -> None:
    done = subprocess.run([str(BINARY), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    top = done.stdout.split("Tasks:")[0]
    for flag in ("--list", "--version", "--help", "--print-completion-script"):
        assert flag in top
    for core in INVOKE_CORE:
        assert core not in top, core
    assert "provision-pi" in done.stdout and "rotate-vps-hostkey" in done.stdout
    version = subprocess.run([str(BINARY), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and re.fullmatch(r"pitunnel \S+\n", version.stdout)
    script = subprocess.run([str(BINARY), "--print-completion-script", "bash"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert script.returncode == 0 and "complete -F" in script.stdout and "pitunnel" in script.stdout
    done = subprocess.run([str(BINARY), "--complete", "--", "pitunnel", "verify", "--inv"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert "--inventory" in done.stdout.split()


def test_flags_before_the_task_work_as_after_it(tmp_path: Path) -> None:
    missing = tmp_path / "hosts.yml"
    done = subprocess.run([str(BINARY), "-i", str(missing), "-l", "pi1", "-vv", "verify"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == failures.USAGE
    assert done.stderr.startswith(f"no inventory at {missing} (from -i)")
    ns = namespace()
    assert flags_after_task(["-i", "h.yml", "-l", "pi1", "verify", "-c"], ns) == ["verify", "-i", "h.yml", "-l", "pi1", "-c"]
    assert flags_after_task(["--inventory=h.yml", "-af", "3", "status"], ns) == ["status", "--inventory=h.yml", "-af", "3"]
    assert flags_after_task(["-ih.yml", "-h", "verify"], ns) == ["-h", "verify", "-ih.yml"]
    assert flags_after_task(["--list"], ns) == ["--list"]
    assert flags_after_task(["--check", "--json", "provision"], ns) == ["provision", "--check", "--json"]
    assert flags_after_task(["-avi", "h.yml", "verify"], ns) == ["verify", "-avi", "h.yml"]


def test_a_flag_with_no_task_says_where_it_goes() -> None:
    code, out, err = run("-i", "hosts.yml")
    assert code == failures.USAGE and out == ""
    assert err.startswith("pitunnel: -i goes with a task. Fix: pitunnel TASK -i ...") and err.count("\n") == 1


@pytest.mark.parametrize("args, line", [
    (("verify", "-i"), "pitunnel verify: -i/--inventory needs a value. Fix: give it one, e.g. -i VALUE"),
    (("init", "-i", ""), "-i/--inventory is empty. Fix: give the inventory file (-i hosts.yml), or leave -i out"),
    (("status", "-i", ""), "-i/--inventory is empty. Fix: give the inventory file (-i hosts.yml), or leave -i out"),
    (("provision", "-k", "ab:cd"), "-k/--accept-changed-host-key 'ab:cd' is not a SHA256 fingerprint. Fix: "),
    (("provision", "-k", "SHA256:short"), "-k/--accept-changed-host-key 'SHA256:short' is not a SHA256 fingerprint"),
    (("rotate-keys", "--laptop-key", "/missing/key"), "--laptop-key /missing/key: needs the private key and "
                                                      "/missing/key.pub"),
    (("status", "--forks", "0"), "--forks 0: at least 1 host at a time. Fix: --forks N with N >= 1"),
    (("status", "--forks", "many"), "pitunnel: --forks 'many' is not a number. Fix: --forks N"),
    (("verify", "-c"), "pitunnel verify: no flag -c (only provision-vps, provision-pi, provision, teardown"),
    (("verify", "-k", "SHA256:" + "A" * 43), "pitunnel verify: no flag -k"),
    (("--echo", "verify"), "pitunnel: no flag --echo. Fix: pitunnel --help lists the tasks"),
    (("deploy",), "pitunnel: no task named 'deploy'. Fix: pitunnel --list shows the tasks"),
    (("--help", "deploy"), "pitunnel --help deploy: no task named 'deploy'. Fix: pitunnel --list shows the tasks"),
    (("revoke",), "pitunnel revoke: 'revoke' did not receive required positional arguments: 'pi'. Fix: "),
])
def test_wrong_arguments_are_one_line_naming_the_flag_and_exit_3_before_any_host(
        args: tuple[str, ...], line: str, inv_file: Path) -> None:  # noqa: F811
    inventory = [] if "-i" in args or args[0] in ("--help", "deploy", "revoke", "--echo") else ["-i", str(inv_file)]
    code, out, err = run(*args, *inventory)  # a good inventory where the flag under test is not -i
    assert code == failures.USAGE, (code, err)
    assert err.startswith(line), err
    assert err.count("\n") == 1 and "inventory:" not in err  # before the inventory is even read
    assert "Traceback" not in err and out == ""


def test_a_good_fingerprint_passes_the_flag_check(inv_file: Path) -> None:  # noqa: F811
    code, _, err = run("provision-vps", "-i", str(inv_file), "-k", "SHA256:" + "Zm9yIHRoZSB0ZXN0IG9ubHksIG5vIHJlYWwga2V5IGF")
    assert code == failures.UNREACHABLE and "not a SHA256" not in err  # it got as far as the (closed) VPS


# ----------------------------------------------------------------------------------------------- point 11


@dataclass
class Host:
    name: str


def test_forks_caps_how_many_hosts_are_worked_on_at_once() -> None:
    def peak(forks: int, hosts: int) -> int:
        busy, most, lock = [0], [0], threading.Lock()

        def work(remote: Host) -> str:
            with lock:
                busy[0] += 1
                most[0] = max(most[0], busy[0])
            time.sleep(0.05)
            with lock:
                busy[0] -= 1
            return remote.name

        play = Play(None, Options(forks=forks), Reporter(quiet=True, out=io.StringIO()))  # type: ignore[arg-type]
        names = [Host(f"pi{i}") for i in range(hosts)]
        play.remotes = {h.name: h for h in names}  # type: ignore[misc]
        assert play.each(names, work) == {h.name: h.name for h in names}  # type: ignore[arg-type]
        return most[0]

    assert peak(2, 6) == 2
    assert peak(1, 3) == 1
    assert peak(32, 6) == 6  # the default: every host at once (up to 32)
    assert Options().forks == 32


def test_limit_leaves_out_hosts_after_a_bang(inv_file: Path) -> None:  # noqa: F811
    inv = load_inventory(inv_file)
    assert resolve_limit(frozenset({"pis", "!pi2"}), inv) == {"pi1", "cam3"}
    assert resolve_limit(frozenset({"!pi*"}), inv) == {"main", "cam3"}  # exclusions alone: from every host
    assert resolve_limit(frozenset({"pi*", "!pis"}) | {"main"}, inv) == {"main"}
    with pytest.raises(BadLimit, match=r"--limit '!nope' matches no host"):
        resolve_limit(frozenset({"pis", "!nope"}), inv)
    with pytest.raises(BadLimit, match=r"leaves no host"):
        resolve_limit(frozenset({"pi1", "!pis"}), inv)
    code, out, err = run("status", "-i", str(inv_file), "-l", "pis,!pi2,!cam3")
    assert code == failures.UNREACHABLE and "pi1" in out + err and "pi2 " not in out + err and "cam3" not in out + err


def test_vv_shows_the_handshake_and_each_login_attempt_with_every_secret_masked(tmp_path: Path) -> None:
    password, passphrase = "Pa55-w0rd-7c1e", "open-sesame-4411"
    key_file = tmp_path / "id_test"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(key_file)], check=True)
    material = key_file.read_text()
    sshd = FakeSshd(paramiko.ECDSAKey.generate(), login_password=password)  # it refuses the key: then the password
    out = io.StringIO()
    sshdebug.secret(password)  # as Play.start does with the run's passwords (the passphrase: as the ring reads it)
    sshdebug.enable({("127.0.0.1", sshd.port): "pi1"}, out=lambda: out)
    sshdebug.CURRENT.host = "pi1"  # as Play runs each host's work: the lines its worker logs are under its name
    try:
        ring = sshauth.KeyRing(ask=lambda prompt: passphrase, terminal=lambda: True)
        host = Remote(dataclasses.replace(spec(sshd.port), key=key_file), tmp_path / "kh", Credentials(password),
                      accept_new_host_keys=True, keys=ring)
        assert host.run("echo in", sudo=False).stdout == "in\n"
        host.close()
    finally:
        sshdebug.disable()
        sshd.close()
    shown = out.getvalue()
    assert "Connected (version 2.0" in shown or "Remote version" in shown, shown
    for said in (r"Connected \(version 2.0", r"Kex: ", r"HostKey: ", r"Cipher: ", r"Trying FileKey\(path=.*id_test",
                 r"Authentication \(publickey\) failed", r"Trying Password\(user='pi'\)",
                 r"Authentication \(password\) successful"):
        assert re.search(rf"^ssh +pi1 +{said}", shown, re.M), said
    assert "[chan " not in shown and "kex algos" not in shown  # the noise is left out
    for secret in (password, passphrase, *[l for l in material.splitlines() if len(l) > 20]):
        assert secret not in shown, secret
    assert sshdebug.masked(f"x {password} y {material}") == f"x {sshdebug.MASK} y (key material: {sshdebug.MASK})\n"


# -------------------------------------------------------------------------------------- the smaller things


def test_a_limit_the_task_has_no_host_in_prints_no_empty_recap(inv_file: Path) -> None:  # noqa: F811
    code, out, err = run("provision-pi", "-i", str(inv_file), "-l", "main", "--check")
    assert code == failures.USAGE and "PLAY RECAP" not in out + err
    assert "--limit 'main' selects main, but this task works on none of them" in err


@pytest.mark.parametrize("limit", ["main", "nosuch"])
def test_json_prints_one_document_on_exit_3_too_with_the_reason(limit: str, inv_file: Path) -> None:  # noqa: F811
    code, out, err = run("status", "--json", "-i", str(inv_file), "-l", limit)
    assert code == failures.USAGE
    doc = json.loads(out)
    assert doc["exit_code"] == 3 and doc["hosts"] == {} and doc["tunnels"] == [] and doc["task"] == "status"
    assert doc["error"].startswith(f"--limit '{limit}'") and doc["error"] in err


def test_a_tab_in_the_indentation_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "hosts.yml"
    bad.write_text("vps:\n  main:\n\taddress: 192.0.2.1\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(bad)
    assert f"{bad}:3:1: YAML syntax error: a tab character" in str(caught.value)
    assert "replace the tab with spaces" in str(caught.value)


def test_three_wrong_passphrases_say_so_not_set_key(tmp_path: Path) -> None:
    key_file = tmp_path / "id_test"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "right", "-f", str(key_file)], check=True)
    asked: list[str] = []
    ring = sshauth.KeyRing(ask=lambda prompt: asked.append(prompt) or "wrong", terminal=lambda: True)
    sshd = FakeSshd(paramiko.ECDSAKey.generate())
    try:
        host = Remote(dataclasses.replace(spec(sshd.port), key=key_file), tmp_path / "kh", Credentials(None),
                      accept_new_host_keys=True, keys=ring)
        with pytest.raises(Unreachable) as caught:
            host.run("true", sudo=False)
    finally:
        sshd.close()
    assert len(asked) == sshauth.TRIES
    why = str(caught.value)
    assert f"key {key_file}: no right passphrase after 3 tries" in why and "set key" not in why, why
    assert f"ssh-add {key_file}" in why


def test_a_wheel_installed_in_a_venv_of_its_own_is_the_same_program_from_an_empty_folder(tmp_path: Path) -> None:
    """Not editable: the wheel pip builds from the checkout, installed without the source beside it, run from an
    empty folder (about 8 s: pip builds the wheel; the venv borrows this one's dependencies through a .pth)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path)],
                   check=True, capture_output=True, timeout=240)
    wheel = next(tmp_path.glob("pitunnel-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "invoke").is_dir())
    (site / "deps.pth").write_text(f"{deps}\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    binary = str(venv / "bin" / "pitunnel")
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import pitunnel; print(pitunnel.__file__)"],
                           cwd=empty, capture_output=True, text=True, timeout=60)
    assert where.stdout.startswith(str(site))  # the wheel's copy, not the checkout's
    done = subprocess.run([binary, "--help"], cwd=empty, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("Usage: pitunnel TASK [flags]") and "--echo" not in done.stdout
    done = subprocess.run([binary, "-l", "pi1", "status"], cwd=empty, capture_output=True, text=True, timeout=60)
    assert done.returncode == failures.USAGE and done.stderr.startswith("no inventory at inventory/hosts.yml")
    assert "lab.yml" not in done.stderr.split("(from")[1].split(")")[0]  # not the checkout's fallback
