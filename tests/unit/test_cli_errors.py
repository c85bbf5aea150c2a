"""The command line as a user meets it (issue 13): one line per network, auth or protocol failure and no
traceback, the exit codes, --limit's globs and role names, flag letters that agree across tasks, --dry,
where the inventory comes from, Ctrl-C, the heartbeat, -v and --json. Loopback only, no lab."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import re
import os
import signal
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from invoke import Collection, Context, Exit, Program

from pitunnel import failures, taskkit, tasks
from pitunnel.taskkit import Flags, provisioning_task, resolve_inventory, run_play
from pitunnel.inventory import HostSpec, load_inventory
from pitunnel.play import BadLimit, Play, resolve_limit
from pitunnel.remote import Credentials, Remote, Unreachable
from pitunnel.report import Reporter
from tests.unit.sshd_fake import FakeSshd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spec(port: int, *, role: str = "pi", user: str = "pi", timeout: float = 1.0) -> HostSpec:
    return HostSpec(name="h1", role=role, address="127.0.0.1", port=port, user=user, key=None, password_file=None,
                    sudo_password_file=None, host_key=None, connect_timeout=timeout)


def why(port: int, tmp_path: Path, **kw: object) -> str:
    with pytest.raises(Unreachable) as caught:
        Remote(spec(port, **kw), tmp_path / "known_hosts").run("true")  # type: ignore[arg-type]
    return str(caught.value)


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.ssh/id_* of whoever runs the tests
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # nor their agent's keys
    failures.silence_paramiko()
    yield


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_a_port_that_speaks_http_says_so_in_one_line_and_nothing_on_stderr(web: int, tmp_path: Path,
                                                                          capfd: pytest.CaptureFixture[str]) -> None:
    text = why(web, tmp_path)
    assert text == (f"pi@127.0.0.1:{web}: port {web} speaks HTTP, not SSH: `port:` must be the host's sshd port "
                    "(a web server answers there)")
    out, err = capfd.readouterr()
    assert err == "" and out == ""  # paramiko's transport thread logs its traceback nowhere


def test_a_port_that_never_greets_and_a_closed_port(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # the kernel accepts; nobody ever says a word
    port = silent.getsockname()[1]
    try:
        started = time.monotonic()
        assert why(port, tmp_path) == (f"pi@127.0.0.1:{port}: no SSH handshake with port {port} within 1s: is it an "
                                       "SSH server? (check `port:`)")
        assert time.monotonic() - started < 8
    finally:
        silent.close()
    closed = free_port()
    assert why(closed, tmp_path) == (f"pi@127.0.0.1:{closed}: connection refused: nothing listens on port {closed} "
                                     "(is `port:` the host's sshd port, and is sshd running?)")
    assert capfd.readouterr().err == ""


def test_each_exception_maps_to_one_line_with_the_next_step() -> None:
    s = spec(22, timeout=7)
    assert failures.not_connected(TimeoutError(), s, "w") == (
        "w: no answer within 7s: the host is off, the address is wrong, or a firewall drops the packets (raise "
        "`connect_timeout:` for a slow link)")
    assert "no route to host" in failures.not_connected(
        paramiko.ssh_exception.NoValidConnectionsError({("1.2.3.4", 22): OSError(113, "No route")}), s, "w")
    assert failures.not_connected(socket.gaierror(-2, "Name or service not known"), s, "w") == (
        "w: cannot resolve '127.0.0.1' (Name or service not known): check `address:` in the inventory")
    assert failures.not_connected(ConnectionResetError(), s, "w").startswith("w: the connection was closed before")
    assert failures.not_connected(paramiko.SSHException("odd"), s, "w") == "w: odd"
    assert "\n" not in failures.not_connected(EOFError(), s, "w")


def test_a_pi_login_refused_as_pi_names_the_imager_user(tmp_path: Path) -> None:
    sshd = FakeSshd(paramiko.ECDSAKey.generate())
    try:
        def refused(**kw: object) -> str:
            host = spec(sshd.port, **kw)  # type: ignore[arg-type]
            with pytest.raises(Unreachable) as caught:
                Remote(host, tmp_path / "kh", Credentials("wrong"), accept_new_host_keys=True).run("true")
            return str(caught.value)

        assert "current Raspberry Pi OS images have no `pi` user: set `user:` of this Pi in the inventory to the " \
               "user you chose in Raspberry Pi Imager" in refused()
        assert refused(user="alice") == (f"alice@127.0.0.1:{sshd.port}: login refused (tried password; load your key "
                                         "into ssh-agent, or set key (or password_file, or --prompt-for-login-password))")
        assert "Raspberry" not in refused(role="vps")
    finally:
        sshd.close()


def test_exit_codes_are_bits_for_failed_and_unreachable() -> None:
    assert [failures.exit_code(failed=f, unreachable=u) for f, u in
            ((False, False), (True, False), (False, True), (True, True))] == [0, 2, 4, 6]
    assert (failures.USAGE, failures.INTERRUPTED) == (3, 130)


# ------------------------------------------------------------------------------------ inventory and --limit


@pytest.fixture
def inv_file(tmp_path: Path) -> Path:
    vps, pi1, pi2 = free_port(), free_port(), free_port()  # closed: every connection is refused at once
    file = tmp_path / "hosts.yml"
    file.write_text(textwrap.dedent(f"""
        settings: {{laptop_key: null, known_hosts: kh}}
        vps: {{main: {{address: 127.0.0.1, port: {vps}}}}}
        pis:
          pi1: {{address: 127.0.0.1, port: {pi1}, tunnels: {{ssh: {{type: ssh, remote_port: 20024}}}}}}
          pi2: {{address: 127.0.0.1, port: {pi2}, tunnels: {{ssh: {{type: ssh, remote_port: 20025}}}}}}
          cam3: {{address: 127.0.0.1, port: {pi2}, tunnels: {{ssh: {{type: ssh, remote_port: 20026}}}}}}
        """))
    return file


def test_limit_takes_names_globs_and_role_names(inv_file: Path) -> None:
    inv = load_inventory(inv_file)
    assert resolve_limit(frozenset({"pi*"}), inv) == {"pi1", "pi2"}
    assert resolve_limit(frozenset({"pis"}), inv) == {"pi1", "pi2", "cam3"}
    assert resolve_limit(frozenset({"vps", "cam?"}), inv) == {"main", "cam3"}
    assert resolve_limit(frozenset({"pi1", "main"}), inv) == {"pi1", "main"}
    assert resolve_limit(frozenset(), inv) == frozenset()
    with pytest.raises(BadLimit, match=r"--limit 'x\*' matches no host of .*hosts.yml \(hosts: main, pi1, pi2, cam3;"):
        resolve_limit(frozenset({"pi1", "x*"}), inv)


def run(*args: str) -> tuple[int, str, str]:
    """`pitunnel ARGS` in this process: exit code, stdout, stderr."""
    from pitunnel.console import namespace

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            Program(namespace=namespace(), name="pitunnel", binary="pitunnel").run(["pitunnel", *args])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_a_limit_that_selects_no_host_of_the_task_is_an_error_before_any_host(inv_file: Path) -> None:
    code, out, err = run("provision-pi", "-i", str(inv_file), "-l", "main", "--check")
    assert code == 3 and "--limit 'main' selects main, but this task works on none of them" in err
    assert "connection refused" not in out + err  # no host was touched
    code, _, err = run("provision", "-i", str(inv_file), "-l", "nope")
    assert code == 3 and "--limit 'nope' matches no host" in err


def test_an_inventory_error_exits_3_and_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("vps: {main: {adress: x}}\n")
    code, _, err = run("provision", "-i", str(bad))
    assert code == 3 and "bad.yml" in err and "adress" in err
    code, _, err = run("status", "-i", str(tmp_path / "none.yml"))
    assert code == 3 and f"no inventory at {tmp_path / 'none.yml'} (from -i)" in err


def test_unreachable_hosts_exit_4_with_their_reason(inv_file: Path) -> None:
    code, out, err = run("provision", "-i", str(inv_file), "--check")
    assert code == 4, out + err
    assert "unreachable  main       connect - root@127.0.0.1" in out and "connection refused" in out
    assert "Traceback" not in out + err


def test_verify_of_unreachable_hosts_says_why_not_only_fail(inv_file: Path) -> None:
    code, out, err = run("verify", "-i", str(inv_file), "-l", "pi1")
    assert code == 4 and "Traceback" not in out + err
    assert "pi1 via main: FAIL" in out
    assert re.search(r"FAIL  reach the VPS main .*connection refused: nothing listens", out), out


def test_json_documents_of_provision_verify_and_status(inv_file: Path) -> None:
    code, out, err = run("provision", "--json", "-c", "-i", str(inv_file), "-l", "main,pi1")
    doc = json.loads(out)  # stdout holds the document alone; the run's lines went to stderr
    assert code == 4 and doc["exit_code"] == 4 and doc["task"] == "provision" and doc["check"] is True
    assert sorted(doc["hosts"]) == ["main", "pi1"] and "unreachable" in err
    main = doc["hosts"]["main"]
    assert main["unreachable"] == 1 and main["failed"] == 0 and main["changed"] == 0
    assert main["steps"][0]["status"] == "unreachable" and "connection refused" in main["error"]
    code, out, _ = run("status", "--json", "-i", str(inv_file), "-l", "pi1,main")
    doc = json.loads(out)
    assert code == 4 and doc["tunnels"] == [{
        "pi": "pi1", "tunnel": "ssh", "vps": "main", "listen": "127.0.0.1:20024", "state": "unknown", "unit": None,
        "since": None, "reconnects": None, "ssh_starts": None, "last_connect": None, "unit_restarts": None,
        "last_error": doc["tunnels"][0]["last_error"], "certificate_expires": None, "session_since": None}]
    assert doc["tunnels"][0]["last_error"].startswith("the laptop could not reach the Pi: pi@127.0.0.1")
    code, out, _ = run("verify", "--json", "-i", str(inv_file), "-l", "pi2")
    doc = json.loads(out)
    assert code == 4 and doc["pis"]["pi2"]["passed"] is False
    [path] = doc["pis"]["pi2"]["paths"]
    assert path["vps"] == "main" and path["passed"] is False
    assert [c["name"] for c in path["checks"]] == ["reach the VPS main"]  # the path's VPS is down: the Pi waits


def test_status_exits_2_when_a_tunnel_is_known_down() -> None:
    from pitunnel.roles.probes.status import TunnelStatus, is_down

    up = TunnelStatus("pi1", "ssh", "0.0.0.0:1", True, "active", "-", 1, "-", 0)
    down = TunnelStatus("pi1", "web", "127.0.0.1:2", False, "active", "-", 3, "-", 1, "ssh exited with error")
    unknown = TunnelStatus("pi2", "ssh", "127.0.0.1:3", False, None, None, None, None, None, known=False)
    assert [is_down(r) for r in (up, down, unknown)] == [False, True, False]
    assert down.document()["state"] == "down" and down.document()["reconnects"] == 2
    assert unknown.document()["state"] == "unknown" and up.document()["last_error"] is None


def test_inventory_comes_from_i_then_the_environment_then_the_current_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PITUNNEL_INVENTORY", "/srv/fleet.yml")
    assert resolve_inventory("x.yml") == (Path("x.yml"), "-i")
    assert resolve_inventory(None) == (Path("/srv/fleet.yml"), "$PITUNNEL_INVENTORY")
    monkeypatch.delenv("PITUNNEL_INVENTORY")
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "hosts.yml").write_text("")
    assert resolve_inventory(None) == (Path("inventory/hosts.yml"), "./inventory/hosts.yml")
    (tmp_path / "inventory" / "hosts.yml").unlink()
    monkeypatch.setattr(taskkit, "CHECKOUT", False)
    assert resolve_inventory(None) == (Path("inventory/hosts.yml"), "./inventory/hosts.yml")
    code, _, err = run("provision-vps")
    assert code == 3 and "`pitunnel init` writes a first one there" in err and "-i FILE or $PITUNNEL_INVENTORY" in err


# ------------------------------------------------------------------------------------------------- flags


def test_every_short_flag_means_the_same_on_every_task() -> None:
    meaning: dict[str, set[str]] = {}
    for task in tasks.TASKS:
        for arg in Collection(task)[task.name].get_arguments():
            for name in arg.names[1:]:
                meaning.setdefault(name, set()).add(arg.names[0])
    assert {k: v for k, v in meaning.items() if len(v) > 1} == {}
    assert meaning["p"] == {"prompt-for-login-password"} and meaning["r"] == {"prompt-for-sudo-password"}
    teardown = {a.names[0]: a.names for a in Collection(tasks.teardown)["teardown"].get_arguments()}
    assert teardown["purge"] == ("purge",)  # destructive: long name only
    json_on = {t.name for t in tasks.TASKS if "json" in {a.name for a in Collection(t)[t.name].get_arguments()}}
    assert json_on == {"provision", "verify", "status"}


def test_invokes_dry_runs_as_check(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Flags] = []

    @provisioning_task()
    def probe(c: Context, flags: Flags) -> None:
        seen.append(flags)

    @provisioning_task(flags=("inventory",))
    def reader(c: Context, flags: Flags) -> None:
        seen.append(flags)

    program = Program(namespace=Collection(probe, reader), binary="invoke")
    program.run(["invoke", "--dry", "probe", "-l", "pi1"], exit=False)
    program.run(["invoke", "probe"], exit=False)
    program.run(["invoke", "--dry", "reader"], exit=False)
    assert seen == [Flags(check=True, limit="pi1"), Flags(), Flags()]
    err = capsys.readouterr().err
    assert "--dry: run as --check" in err and "--dry: reader never changes a host" in err


# ------------------------------------------------------------------------------- Ctrl-C, heartbeat, -v


def test_ctrl_c_lets_the_step_in_flight_finish_starts_nothing_more_and_exits_130(
        inv_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done: list[str] = []
    # as in a terminal: a run started in the background (nohup, `&` in a script) inherits SIGINT ignored
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)

    def body(play: Play) -> None:
        def step(remote: Remote) -> None:
            os.kill(os.getpid(), signal.SIGINT)  # lands while this host's step runs
            time.sleep(0.2)
            done.append(remote.name)
            play.reporter.line(remote.name, "changed", "a step")

        play.each(play.selected([play.inventory.vps["main"]]), step)
        play.each(play.selected(list(play.inventory.pis.values())), step)  # never started

    try:
        with pytest.raises(Exit) as caught:
            run_play(body, Flags(inventory=str(inv_file)))
        restored = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, inherited)
    out, err = capsys.readouterr()
    assert caught.value.code == 130 and done == ["main"]
    assert "PLAY RECAP" in out and "main                       : ok=0    changed=1" in out
    assert ("interrupted: changed so far: main 1; stopped before their next step: cam3, pi1, pi2. A rerun carries on "
            "from where each host is (every step is idempotent)\n") in err
    assert restored is signal.default_int_handler  # restored


def test_heartbeat_names_host_step_and_elapsed_while_a_step_runs_long() -> None:
    out = io.StringIO()
    r = Reporter(colour=False, out=out, heartbeat_after=0.1, heartbeat_every=0.15)
    with r.busy("pi1", "autossh installed"):
        time.sleep(0.45)
    with r.busy("pi1", "quick"):
        pass
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 4 and all(l == f"{'running':<12} pi1        autossh installed (0s)" for l in lines)


def test_verbose_streams_remote_output_prefixed_by_host(tmp_path: Path) -> None:
    sshd = FakeSshd(paramiko.ECDSAKey.generate())
    out = io.StringIO()
    r = Reporter(colour=False, out=out)
    try:
        host = Remote(spec(sshd.port), tmp_path / "kh", Credentials("login"), accept_new_host_keys=True,
                      echo=lambda text: r.echo("pi1", text))
        assert host.run("echo one; echo two >&2; printf three", sudo=False).stdout == "one\nthree"
        host.close()
    finally:
        sshd.close()
    assert sorted(out.getvalue().splitlines()) == sorted([f"{'':<12} pi1        | {w}" for w in ("one", "two", "three")])


def test_verbose_never_streams_a_secret_files_bytes_from_a_real_ssh_session(tmp_path: Path) -> None:
    """The file facts of a secret File op, read over a real SSH session (a local sh runs them): -v streams
    the other facts' output, and one line in place of the secret's, in no encoding its bytes."""
    import base64

    from pitunnel.facts import file_fact, gather
    from pitunnel.ops import File

    secret, plain = tmp_path / "site.htpasswd", tmp_path / "site.conf"
    secret.write_text("alice:$apr1$sAlT1234$Kq7Zr2Wp9Xv4Ty6Un8Mb01\n")
    plain.write_text("listen 80;\n")
    sshd = FakeSshd(paramiko.ECDSAKey.generate())
    out = io.StringIO()
    r = Reporter(colour=False, out=out)
    try:
        host = Remote(spec(sshd.port), tmp_path / "kh", Credentials("login"), accept_new_host_keys=True,
                      echo=lambda text: r.echo("vps", text))
        facts = gather(host, [*File(str(plain), "x").facts(), *File(str(secret), "y", secret=True).facts(),
                              file_fact(str(secret))])  # the same path read as no secret by another op: still one
        host.close()
    finally:
        sshd.close()
    assert facts.file(str(secret)).content == secret.read_bytes()  # the engine still reads it
    shown = out.getvalue()
    raw = secret.read_bytes()
    for form in (raw.decode().strip(), "Kq7Zr2Wp9Xv4Ty6Un8Mb01", base64.b64encode(raw).decode(), raw.hex()):
        assert form not in shown, form
    assert base64.b64encode(plain.read_bytes()).decode() in shown  # the other file's fact is streamed
    assert len(re.findall(r"\| @@RC 1 0 \(secret: \d+ bytes of output not shown\)\n", shown)) == 1, shown


def test_ctrl_c_at_a_password_prompt_exits_130_touching_nothing(inv_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(prompt: str) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr("getpass.getpass", interrupted)
    ran: list[Play] = []
    with pytest.raises(Exit) as caught:
        run_play(ran.append, Flags(inventory=str(inv_file), prompt_for_login_password=True))
    assert caught.value.code == 130 and "no host was touched" in str(caught.value.message) and ran == []
