"""Hostile and broken inventories: each ends in one InventoryError naming file, line, key and fix, quickly and
in little memory, never a traceback (issue 11, "The inventory"; rows 4 and 5 of the validation).

Inputs that would exhaust memory or hang on a loader without limits run in a forked child with a memory cap
and a timeout (`bounded`), so a regression fails this test instead of the machine.
"""

from __future__ import annotations

import base64
import multiprocessing
import os
import resource
import textwrap
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from pitunnel.inventory import InventoryError, load_inventory

HOST_KEY = "ssh-ed25519 " + base64.b64encode(
    b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))).decode()
VPS = "vps:\n  main:\n    address: 203.0.113.1\n"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME, so ~ and the laptop_key default never see the real one."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


def yml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def write(directory: Path, text: str | bytes, name: str = "hosts.yml") -> Path:
    path = directory / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems(path: Path | str) -> list[str]:
    """The problem lines of the inventory at `path` (which must be refused), each checked to be one line."""
    with pytest.raises(InventoryError) as caught:
        load_inventory(path, save_allocations=False)
    lines = [str(p) for p in caught.value.problems]
    for line in lines:
        assert "\n" not in line and "Traceback" not in line and "Fix: " in line
        assert line.startswith(str(path)), line
    return lines


def one_problem(path: Path | str, key: str, line: int | None, *words: str) -> str:
    """The inventory has exactly one problem, at `key` on `line`, mentioning `words`."""
    [text] = problems(path)
    where = f"{path}:{line}:" if line is not None else f"{path}: "
    assert text.startswith(where), text
    if key:
        assert f": {key}: " in text, text
    for word in words:
        assert word in text, text
    return text


def _child(work: Callable[[], str], memory: int, out: Connection) -> None:
    vm = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                  if line.startswith("VmSize:")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + memory, vm + memory))
    try:
        out.send(("ok", work()))
    except BaseException as e:  # what the loader let escape: the test reports it
        out.send(("escaped", f"{type(e).__name__}: {str(e)[:200]}"))


def bounded(work: Callable[[], str], *, seconds: float = 10, memory: int = 400 << 20) -> tuple[str, float]:
    """Run `work` in a forked child limited to `memory` more bytes and `seconds`: (its result, seconds taken).
    Fails the test if it escapes with an exception, runs out of memory, or takes too long."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(work, memory, send))
    start = time.monotonic()
    child.start()
    try:
        if not receive.poll(seconds):
            pytest.fail(f"still running after {seconds} s")
        status, result = receive.recv()
    finally:
        child.kill()
        child.join()
    assert status == "ok", result
    return result, time.monotonic() - start


def refused(path: Path | str) -> Callable[[], str]:
    """Work for `bounded`: the InventoryError text of loading `path` (an inventory that loads is a failure)."""
    def work() -> str:
        try:
            load_inventory(path, save_allocations=False)
        except InventoryError as e:
            return str(e)
        return "ACCEPTED"
    return work


# ---------------------------------------------------------------------------
# The YAML itself


def billion_laughs(levels: int = 9) -> str:
    lines = ['lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"lol{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return VPS + "\n".join(lines) + "\n"


# under mutmut (its tracing, nice 19, a busy machine) the refusals count, not the stopwatch
SLACK = 20 if "MUTANT_UNDER_TEST" in os.environ else 1


def test_alias_bomb_is_refused_in_a_second(tmp_path: Path) -> None:
    text = billion_laughs(10)
    assert len(text) < 800  # the 700-byte bomb, 9**10 strings once expanded
    path = write(tmp_path, text)
    error, seconds = bounded(refused(path))
    assert seconds < 3 * SLACK, seconds
    lines = error.splitlines()
    assert len(lines) == 2, error
    assert lines[1].startswith(f"{path}:") and "aliases" in lines[1] and "more than 100000 values" in lines[1]
    assert "Fix: write the values out, or use fewer aliases." in lines[1]


def test_merge_key_bomb_is_refused(tmp_path: Path) -> None:
    """Each mapping merges the one before it: the merged pairs grow with the square of the chain's length."""
    lines = ["m0: &m0 {k0: 0}"] + [f"m{i}: &m{i} {{<<: *m{i - 1}, k{i}: {i}}}" for i in range(1, 3000)]
    path = write(tmp_path, VPS + "\n".join(lines) + "\n")
    error, seconds = bounded(refused(path))
    assert seconds < 3 * SLACK, seconds
    assert "aliases (*name) and merges (<<) expand to more than 100000 values" in error, error


def test_aliases_nesting_deeper_than_the_text_are_refused(tmp_path: Path) -> None:
    chain = ["n0: &n0 " + "[" * 50 + "]" * 50]
    chain += [f"n{i}: &n{i} " + "[" * 50 + f"*n{i - 1}" + "]" * 50 for i in range(1, 40)]
    path = write(tmp_path, VPS + "\n".join(chain) + "\n")
    error, _ = bounded(refused(path))
    assert "aliases nest collections more than 64 deep" in error, error


def test_600_nested_brackets_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + "deep: " + "[" * 600 + "]" * 600 + "\n")
    error, _ = bounded(refused(path))
    [_, line] = error.splitlines()
    assert line.startswith(f"{path}:4:"), line
    assert "collections are nested more than 64 deep" in line and "Fix: " in line


def test_non_utf8_byte_names_line_column_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, b"vps:\n  main:\n    address: vps.example.com\n    user: ad\xffmin\n")
    lines = problems(path)
    assert f"{path}:4:13: vps.main.user: byte 0xff is not UTF-8 text. Fix: save the file as UTF-8 text" in "\n".join(
        lines), lines


def test_control_character_names_line_column_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "vps:\n  main:\n    address: vps.exa\x01mple.com\n")
    lines = problems(path)
    assert any(line.startswith(f"{path}:3:21: vps.main.address: control character U+0001 is not allowed.")
               for line in lines), lines


def test_bad_bytes_that_also_break_the_yaml_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, b"vps:\n  main:\n    address: 'vps\xfe\n")
    one_problem(path, "", 3, "byte 0xfe is not UTF-8 text")


def test_many_bad_bytes_are_summed_up(tmp_path: Path) -> None:
    path = write(tmp_path, b"vps:\n  main:\n    address: vps.example.com\n    user: " + b"\x80" * 50 + b"\n")
    lines = [line for line in problems(path) if "UTF-8" in line or "more bytes" in line]
    assert len(lines) == 11 and "40 more bytes or characters like these" in lines[-1], lines


def test_file_over_a_megabyte_is_refused_unread(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + "# padding\n" * 120_000)
    start = time.monotonic()
    one_problem(path, "", None, f"the file is {path.stat().st_size} bytes; pitunnel reads at most 1048576",
                "Fix: an inventory is a few kilobytes")
    assert time.monotonic() - start < 1 * SLACK


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "hosts.yml"
    os.mkfifo(fifo)
    error, _ = bounded(refused(fifo), seconds=5)
    assert f"{fifo}: is not a regular file. Fix: name a YAML file." in error


def test_dev_zero_is_refused(tmp_path: Path) -> None:
    error, _ = bounded(refused("/dev/zero"), seconds=5)
    assert "/dev/zero: is not a regular file." in error


def test_5000_character_key_is_named_as_too_long(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + "    " + "k" * 5000 + ": 1\n")
    one_problem(path, "", 4, "is 5000 characters long; YAML reads at most 1024 characters as a key",
                "Fix: shorten it")


def test_1000_character_key_is_an_unknown_key_shown_short(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + "    " + "k" * 1000 + ": 1\n")
    text = one_problem(path, "vps.main." + "k" * 40 + "... (1000 characters)", 4, "unknown key")
    assert len(text) < 600, len(text)


# ---------------------------------------------------------------------------
# Values that passed and then crashed


def test_100000_character_path_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + "    key: " + "/a" * 50_000 + "\n")
    text = one_problem(path, "vps.main.key", 4, "is 100000 characters long", "Fix: use at most 4096 characters")
    assert len(text) < 400


def test_path_with_a_name_longer_than_the_filesystem_allows(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + f"    key: {tmp_path}/{'a' * 300}\n")
    one_problem(path, "vps.main.key", 4, "cannot use the path", "File name too long",
                "Fix: correct the path")


def test_path_with_a_nul_byte(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + '    key: "/tmp/a\\0b"\n')
    one_problem(path, "vps.main.key", 4)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "0.5", "86400"])
def test_connect_timeout_must_be_a_sane_number_of_seconds(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, VPS + f"    connect_timeout: {value}\n")
    one_problem(path, "vps.main.connect_timeout", 4, "Fix: use a number of seconds from 1 to 3600")


@pytest.mark.parametrize("blob", [
    b"\x00\x00\x00\x0bssh-ed25519",  # the key type and nothing else
    b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x05short",
    b"\x00\x00\x00\x13ecdsa-sha2-nistp256\x00\x00\x00\x08nistp256",
    b"\x00\x00\x00\x07ssh-rsa",
], ids=["ed25519-type-only", "ed25519-short", "ecdsa-no-point", "rsa-type-only"])
def test_host_key_holding_only_its_type_is_refused(tmp_path: Path, blob: bytes) -> None:
    keytype = blob[4:4 + blob[3]].decode()
    path = write(tmp_path, VPS + f"    host_key: {keytype} {base64.b64encode(blob).decode()}\n")
    one_problem(path, "vps.main.host_key", 4, f"is not a whole {keytype} key", "Fix: paste the host's public key")


def test_security_key_host_key_is_refused_up_front(tmp_path: Path) -> None:
    """paramiko cannot check an sk-* host key (and no sshd has one): refused here, not at connect time."""
    blob = b"\x00\x00\x00\x1ask-ssh-ed25519@openssh.com\x00\x00\x00\x20" + bytes(32) + b"\x00\x00\x00\x04ssh:"
    path = write(tmp_path, VPS + f"    host_key: sk-ssh-ed25519@openssh.com {base64.b64encode(blob).decode()}\n")
    one_problem(path, "vps.main.host_key", 4, "is not an SSH public key")


def test_a_whole_host_key_still_passes(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + f"    host_key: {HOST_KEY} root@vps\n")
    assert load_inventory(path, save_allocations=False).vps["main"].host_key == HOST_KEY


def test_control_characters_by_escape_in_a_remote_path_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + '    tls_certificate: "/etc/ssl/a\\x01b.pem"\n    tls_key: /etc/ssl/k.pem\n')
    one_problem(path, "vps.main.tls_certificate", 4, "holds a control character", "without newlines")


def _secret(tmp_path: Path, content: bytes) -> Path:
    file = tmp_path / "sudo-password"
    file.write_bytes(content)
    file.chmod(0o600)
    return file


@pytest.mark.parametrize(("content", "words"), [
    (b"caf\xe9zqx\n", "is not UTF-8 text (byte 4 is not)"),
    (b"", "is empty"),
    (b"\n", "is empty"),
    (b"zqx\nzqy\n", "holds more than one line"),
    (b"zqx\r\n", "holds more than one line (or a carriage return)"),
    (b"zqx" * 2000, "is bigger than 4096 bytes"),
], ids=["latin1", "empty", "newline-only", "two-lines", "crlf", "huge"])
def test_sudo_password_file_must_be_one_line_of_utf8(tmp_path: Path, content: bytes, words: str) -> None:
    file = _secret(tmp_path, content)
    path = write(tmp_path, VPS + f"    sudo_password_file: {file}\n")
    text = one_problem(path, "vps.main.sudo_password_file", 4, words)
    assert "zq" not in text  # never the content


def test_good_sudo_password_file_passes(tmp_path: Path) -> None:
    file = _secret(tmp_path, "pässwörd\n".encode())
    path = write(tmp_path, VPS + f"    sudo_password_file: {file}\n")
    assert load_inventory(path, save_allocations=False).vps["main"].sudo_password_file == file


# ---------------------------------------------------------------------------
# Every problem in one run


def test_unknown_vps_is_reported_with_the_pis_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + yml("""
        pis:
          pi1:
            address: 10.0.0.1
            port: nope
            vps: mian
        """))
    lines = problems(path)
    assert len(lines) == 2, lines
    assert ": pis.pi1.port: expected a whole number" in lines[0]
    assert lines[1].startswith(f"{path}:8:") and "pis.pi1.vps: there is no VPS named 'mian'" in lines[1], lines


def test_vps_port_clash_is_reported_with_the_vps_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path, """
        vps:
          main:
            address: 203.0.113.1
            port: 80
            client_alive_interval: 0
        """)
    lines = problems(path)
    assert len(lines) == 2 and any("vps.main.http_port: port 80 is also the VPS's port (line 4)" in line
                                   for line in lines), lines


def test_tunnel_port_clash_is_reported_with_the_pis_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path, """
        vps:
          main:
            address: 203.0.113.1
            port: 12345
            tunnel_user: root
        pis:
          pi1:
            address: 10.0.0.1
            server_alive_interval: 0
            tunnels:
              ssh: {type: ssh, remote_port: 12345}
              bad: {type: http, remote_port: 80}
              web: {type: http}
              api: {type: http, path: /pi1/web/}
        """)
    lines = problems(path)
    assert [line.split(": ")[1] for line in lines] == [
        "vps.main.tunnel_user", "pis.pi1.server_alive_interval", "pis.pi1.tunnels.ssh.remote_port",
        "pis.pi1.tunnels.bad.remote_port", "pis.pi1.tunnels.api.path"], lines
    assert "port 12345 on VPS 'main' is already used by vps.main.port (line 4)" in lines[2]
    assert "path '/pi1/web/' on VPS 'main' is already routed to pis.pi1.tunnels.web (line 13)" in lines[4]


def test_metrics_port_clashing_with_a_tunnel_or_the_vps_is_refused(tmp_path: Path) -> None:
    """The node exporter and a tunnel cannot both listen on one port of the VPS: one of them would fail to
    start on every boot. Refused at the tunnel (or the VPS's own port), naming metrics_address's line."""
    path = write(tmp_path, """
        vps:
          main:
            address: 203.0.113.1
            metrics: true
            metrics_address: 127.0.0.1:9100
          backup:
            address: 203.0.113.2
            metrics: true
            metrics_address: 10.0.0.9:443
        pis:
          pi1:
            vps: [main, backup]
            address: 10.0.0.1
            tunnels:
              ssh: {type: ssh, remote_port: 9100}
        """)
    lines = problems(path)
    assert len(lines) == 2, lines
    assert ("vps.backup.metrics_address: port 443 is also the VPS's https_port" in lines[0]
            and "give metrics_address a port nothing else on the VPS uses" in lines[0]), lines
    assert lines[1].startswith(f"{path}:15:") and ("pis.pi1.tunnels.ssh.remote_port: port 9100 on VPS 'main' is "
                                                   "already used by vps.main.metrics_address (line 5)") in lines[1]
    path.write_text(path.read_text().replace("metrics: true", "metrics: false"))
    load_inventory(path, save_allocations=False)  # no exporter: nothing listens there


def test_default_metrics_address_clashing_with_a_tunnel_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, """
        vps:
          main: {address: 203.0.113.1, metrics: true}
        pis:
          pi1: {address: 10.0.0.1, tunnels: {web: {type: http, remote_port: 9100}}}
        """)
    [line] = problems(path)
    assert "port 9100 on VPS 'main' is already used by vps.main.metrics_address" in line, line
    assert "choose a port nothing else uses" in line


def test_pi_sharing_a_vps_name_is_reported_with_its_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + yml("""
        pis:
          main:
            address: 10.0.0.1
            port: nope
        """))
    lines = problems(path)
    assert any("pis.main: the name 'main' is also used by a VPS (line 2)" in line for line in lines), lines


# ---------------------------------------------------------------------------
# Row 4: tunnel_user must not name an account pitunnel did not create


@pytest.mark.parametrize("user", ["www-data", "sshd", "nobody", "daemon", "systemd-network", "_apt", "messagebus",
                                  "backup", "mail", "postgres"])
def test_vps_tunnel_user_may_not_be_a_system_account(tmp_path: Path, user: str) -> None:
    path = write(tmp_path, VPS + f"    tunnel_user: {user}\n")
    one_problem(path, "vps.main.tunnel_user", 4, f"'{user}' is a system account",
                "delete it on teardown", "Fix: use an account only pitunnel uses, such as 'pitunnel'.")


@pytest.mark.parametrize("user", ["ubuntu", "admin", "debian", "ec2-user", "pi"])
def test_vps_tunnel_user_may_not_be_an_image_login(tmp_path: Path, user: str) -> None:
    path = write(tmp_path, VPS + f"    tunnel_user: {user}\n")
    one_problem(path, "vps.main.tunnel_user", 4, f"'{user}' is the login account of common server",
                "Fix: use an account only pitunnel uses")


@pytest.mark.parametrize("user", ["www-data", "sshd", "nobody", "root"])
def test_pi_tunnel_user_may_not_be_a_system_account(tmp_path: Path, user: str) -> None:
    path = write(tmp_path, VPS + f"pis:\n  pi1:\n    address: 10.0.0.1\n    tunnel_user: {user}\n")
    one_problem(path, "pis.pi1.tunnel_user", 7)


def test_pi_tunnel_user_may_be_its_own_login_user(tmp_path: Path) -> None:
    """The variant lab test runs the tunnel as the existing login user 'pi', on purpose."""
    path = write(tmp_path, VPS + "pis:\n  pi1:\n    address: 10.0.0.1\n    user: pi\n    tunnel_user: pi\n")
    pi = load_inventory(path, save_allocations=False).pis["pi1"]
    assert (pi.user, pi.tunnel_user) == ("pi", "pi")


def test_pi_tunnel_user_may_not_be_another_image_login(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + "pis:\n  pi1:\n    address: 10.0.0.1\n    user: admin\n    tunnel_user: pi\n")
    one_problem(path, "pis.pi1.tunnel_user", 8, "'pi' is the login account",
                "or the Pi's login user 'admin'")


# ---------------------------------------------------------------------------
# Row 5: http routes nginx would merge or drop


def test_same_server_name_on_two_tunnels_names_both_places(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + yml("""
        pis:
          pi1:
            address: 10.0.0.1
            tunnels:
              web: {type: http, server_name: app.example.com, path: /a/}
          pi2:
            address: 10.0.0.2
            tunnels:
              web: {type: http, server_name: APP.example.com., path: /b/}
        """))
    one_problem(path, "pis.pi2.tunnels.web.server_name", 12,
                "server_name 'APP.example.com.' on VPS 'main' is already used by pis.pi1.tunnels.web.server_name "
                "(line 8)", "Fix: give each http tunnel its own server_name")


def test_same_server_name_on_two_vpses_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + yml("""
          second:
            address: 203.0.113.2
        pis:
          pi1:
            address: 10.0.0.1
            vps: main
            tunnels: {web: {type: http, server_name: app.example.com}}
          pi2:
            address: 10.0.0.2
            vps: second
            tunnels: {web: {type: http, server_name: app.example.com}}
        """))
    assert len(load_inventory(path, save_allocations=False).pis) == 2


def test_root_path_next_to_the_default_server_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + "pis:\n  pi1:\n    address: 10.0.0.1\n    tunnels:\n"
                                 "      web: {type: http, path: /}\n")
    one_problem(path, "pis.pi1.tunnels.web.path", 8, "path '/' is the VPS's default server's own catch-all",
                "Fix: use a prefix such as /pi1/web/, or give the tunnel its own server_name")


def test_same_path_on_two_pis_names_both_places(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + yml("""
        pis:
          pi1:
            address: 10.0.0.1
            tunnels: {web: {type: http, path: /app/}}
          pi2:
            address: 10.0.0.2
            tunnels: {web: {type: http, path: /app/}}
        """))
    one_problem(path, "pis.pi2.tunnels.web.path", 10,
                "path '/app/' on VPS 'main' is already routed to pis.pi1.tunnels.web (line 7)")


def test_explicit_path_equal_to_another_tunnels_default_path(tmp_path: Path) -> None:
    path = write(tmp_path, VPS + yml("""
        pis:
          pi1:
            address: 10.0.0.1
            tunnels: {web: {type: http}}
          pi2:
            address: 10.0.0.2
            tunnels: {web: {type: http, path: /pi1/web/}}
        """))
    one_problem(path, "pis.pi2.tunnels.web.path", 10, "path '/pi1/web/' on VPS 'main' is already routed to "
                "pis.pi1.tunnels.web (line 7)")


@pytest.mark.parametrize("prefix", ["/pi1/./web/", "/pi1/../web/", "/./", "/../"])
def test_dot_segments_nginx_would_resolve_are_refused(tmp_path: Path, prefix: str) -> None:
    path = write(tmp_path, VPS + f"pis:\n  pi1:\n    address: 10.0.0.1\n    tunnels:\n"
                                 f"      web: {{type: http, path: {prefix}}}\n")
    one_problem(path, "pis.pi1.tunnels.web.path", 8, "has a '.' or '..' segment")


def test_host_key_with_a_non_ascii_character_is_refused(tmp_path: Path) -> None:
    """Found by the fuzz test: base64 raised UnicodeEncodeError (a traceback) on a non-ASCII character."""
    keytype, blob = HOST_KEY.split()[:2]
    path = write(tmp_path, VPS + f"    host_key: {keytype} \ufffd{blob[1:]}\n")
    one_problem(path, "vps.main.host_key", 4, "the key's base64 part is malformed")


# ---------------------------------------------------------------------------
# Values that reach a template or a shell (issue 22, item 4): each to its real grammar

def test_a_zone_id_that_is_not_an_interface_name_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, 'vps:\n  main:\n    address: "fe80::1%$(touch x)"\n')
    one_problem(path, "vps.main.address", 3, "zone id '$(touch x)'", "not a network interface name", "fe80::1%eth0")
    assert not (tmp_path / "x").exists()
    ok = write(tmp_path, 'vps:\n  main:\n    address: "fe80::1%eth0.10"\n', "ok.yml")
    assert load_inventory(ok, save_allocations=False).vps["main"].address == "fe80::1%eth0.10"


@pytest.mark.parametrize("zone", ["", "..", "a/b", "a:b", "a b", "sixteen-chars-xx", "é0", "ETH0", "0", "2"])
def test_a_zone_id_follows_the_kernels_interface_names(tmp_path: Path, zone: str) -> None:
    path = write(tmp_path, f'vps:\n  main:\n    address: "fe80::1%{zone}"\n')
    one_problem(path, "vps.main.address", 3)


NEWLINE_INVENTORY = """\
vps:
  main:
    address: 203.0.113.1
    user: admin
    tunnel_user: tunnels
    public_name: vps.example.com
    tls_certificate: /etc/ssl/c.pem
    tls_key: /etc/ssl/k.pem
    metrics: true
    metrics_address: 127.0.0.1:9100
    host_key: HOST_KEY
    acme:
      email: admin@example.com
      directory: https://ca.example.net/dir
pis:
  pi1:
    address: 192.168.1.10
    user: pi
    tunnels:
      web:
        type: http
        server_name: pi1.example.com
      app:
        type: http
        path: /pi1/app/
"""


@pytest.mark.parametrize(("key", "value"), [
    ("vps.main.address", "203.0.113.1"), ("vps.main.user", "admin"), ("vps.main.tunnel_user", "tunnels"),
    ("vps.main.public_name", "vps.example.com"), ("vps.main.tls_certificate", "/etc/ssl/c.pem"),
    ("vps.main.metrics_address", "127.0.0.1:9100"), ("vps.main.host_key", "HOST_KEY"),
    ("vps.main.acme.email", "admin@example.com"), ("vps.main.acme.directory", "https://ca.example.net/dir"),
    ("pis.pi1.address", "192.168.1.10"), ("pis.pi1.user", "pi"),
    ("pis.pi1.tunnels.web.server_name", "pi1.example.com"), ("pis.pi1.tunnels.app.path", "/pi1/app/"),
])
@pytest.mark.parametrize("newline", ["\\n", "\\r", "\\u2028", "\\x85"])
def test_a_newline_in_any_value_is_refused(tmp_path: Path, key: str, value: str, newline: str) -> None:
    """`address: "vps.example.com\\n    ProxyCommand ..."` would add a line to the tunnel's ssh config."""
    leaf = key.rsplit(".", 1)[1]
    text = NEWLINE_INVENTORY.replace(f"{leaf}: {value}\n", f'{leaf}: "{value}{newline}    ProxyCommand touch x"\n', 1)
    assert text != NEWLINE_INVENTORY
    text = text.replace("HOST_KEY", HOST_KEY)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "ProxyCommand" in row)
    one_problem(write(tmp_path, text), key, line, "control character", "write the value on one line")


def test_the_newline_inventory_passes_without_its_newline(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, NEWLINE_INVENTORY.replace("HOST_KEY", HOST_KEY)), save_allocations=False)
    assert inv.vps["main"].metrics_address == "127.0.0.1:9100"


@pytest.mark.parametrize("port", ["²", "٩١٠٠", "９１００", "+80", " 80", "080000"])
def test_a_listen_port_is_ascii_digits(tmp_path: Path, port: str) -> None:
    """'²'.isdigit() is true and int('²') fails: a traceback before; int('٩١٠٠') is 9100."""
    path = write(tmp_path, VPS + f'    metrics_address: "127.0.0.1:{port}"\n')
    one_problem(path, "vps.main.metrics_address", 4, "has no valid port", "127.0.0.1:9100")


@pytest.mark.parametrize(("key", "value"), [
    ("tls_certificate", "/etc/ssl/é.pem"), ("tls_certificate", "/etc/ssl/`id`.pem"),
    ("tls_certificate", "/etc/ssl/*.pem"), ("public_name", "vps.exämple.com"),
])
def test_remote_paths_and_names_are_ascii(tmp_path: Path, key: str, value: str) -> None:
    pair = "    tls_key: /etc/ssl/k.pem\n" if key == "tls_certificate" else ""
    path = write(tmp_path, VPS + f'    {key}: "{value}"\n' + pair)
    one_problem(path, f"vps.main.{key}", 4)


@pytest.mark.parametrize("email", ["admin@exämple.com", "ädmin@example.com", "a$(id)@example.com", "a b@example.com"])
def test_an_acme_email_is_ascii_atext(tmp_path: Path, email: str) -> None:
    path = write(tmp_path, VPS + f'    acme:\n      email: "{email}"\n')
    one_problem(path, "vps.main.acme.email", 5, "is not an e-mail address")
