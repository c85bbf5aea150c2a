"""Each way a connection fails, as the one line the user reads (pitunnel.failures; loopback only)."""

from __future__ import annotations

import dataclasses
import errno
import http.server
import socket
import threading
from collections.abc import Iterator

import paramiko
import pytest

from pitunnel import failures
from pitunnel.failures import PI_USER_HINT, not_connected
from pitunnel.inventory import PiSpec

WHERE = "pi@10.0.0.2:22"
PI = PiSpec(name="pi1", role="pi", address="10.0.0.2", port=22, user="admin", key=None, password_file=None,
            sudo_password_file=None, host_key=None, connect_timeout=5, vpses=("main",), given=frozenset({"address"}))
LOGIN = "set key (or password_file, or --prompt-for-login-password) in the inventory"


def refused(port: int) -> str:
    return (f"{WHERE}: connection refused: nothing listens on port {port} (is `port:` the host's sshd port, and is sshd "
            "running?)")


NO_ROUTE = f"{WHERE}: no route to host (is `address:` right, and is the host on and on this network?)"


@pytest.mark.parametrize(("exc", "said"), [
    (paramiko.AuthenticationException("no"), f"{WHERE}: login refused ({LOGIN})"),
    (paramiko.ssh_exception.NoValidConnectionsError({("10.0.0.2", 2222): ConnectionRefusedError(errno.ECONNREFUSED, "x")}),
     refused(2222)),
    (paramiko.ssh_exception.NoValidConnectionsError({("10.0.0.2", 2222): OSError(errno.EHOSTUNREACH, "x"),
                                                      ("::1", 2222): ConnectionRefusedError(errno.ECONNREFUSED, "x")}),
     NO_ROUTE),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), refused(2222)),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
     f"{WHERE}: cannot resolve 'pi.example.net' (Name or service not known): check `address:` in the inventory"),
    (socket.timeout("timed out"), f"{WHERE}: no answer within 5s: the host is off, the address is wrong, or a firewall "
                                  "drops the packets (raise `connect_timeout:` for a slow link)"),
    (TimeoutError(), f"{WHERE}: no answer within 5s: the host is off, the address is wrong, or a firewall drops the "
                     "packets (raise `connect_timeout:` for a slow link)"),
    (OSError(errno.EHOSTUNREACH, "unreachable"), NO_ROUTE),
    (OSError(errno.ENETUNREACH, "unreachable"), NO_ROUTE),
    (ConnectionResetError(errno.ECONNRESET, "reset"),
     f"{WHERE}: the connection was closed before login (sshd refused us: MaxStartups, a firewall or fail2ban?)"),
    (EOFError(), f"{WHERE}: the connection was closed before login (sshd refused us: MaxStartups, a firewall or fail2ban?)"),
    (OSError(errno.EACCES, "Permission denied"), f"{WHERE}: [Errno 13] Permission denied"),
    (paramiko.SSHException("  "), f"{WHERE}: SSHException"),
], ids=["login", "refused-everywhere", "unreachable-somewhere", "refused", "unresolved", "timeout", "timeout-error",
        "host-unreachable", "net-unreachable", "reset", "eof", "other", "nothing-said"])
def test_each_failure_is_one_line_with_the_next_step(exc: BaseException, said: str) -> None:
    assert not_connected(exc, PI, WHERE, address="pi.example.net", port=2222) == said


def test_a_pi_user_named_pi_is_told_of_raspberry_pi_imager() -> None:
    pi_user = dataclasses.replace(PI, user="pi")
    assert not_connected(paramiko.AuthenticationException(), pi_user, WHERE) == \
        f"{WHERE}: login refused ({PI_USER_HINT}; or {LOGIN})"
    vps_user = dataclasses.replace(PI, user="pi", role="vps")
    assert not_connected(paramiko.AuthenticationException(), vps_user, WHERE) == f"{WHERE}: login refused ({LOGIN})"
    assert failures.exit_code(failed=True, unreachable=True) == 6 and failures.exit_code(failed=False, unreachable=False) == 0


class Web(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def web() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Web)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_no_ssh_banner_from_a_web_server_or_from_something_else(web: int) -> None:
    banner = paramiko.SSHException("Error reading SSH protocol banner")
    spec = dataclasses.replace(PI, address="127.0.0.1", port=web)
    assert not_connected(banner, spec, WHERE) == (f"{WHERE}: port {web} speaks HTTP, not SSH: `port:` must be the host's "
                                                  "sshd port (a web server answers there)")
    with socket.socket() as quiet:  # listens, never answers: no HTTP
        quiet.bind(("127.0.0.1", 0))
        quiet.listen(1)
        port = quiet.getsockname()[1]
        spec = dataclasses.replace(PI, address="127.0.0.1", port=port, connect_timeout=0.2)
        assert not_connected(paramiko.SSHException("Indecipherable protocol version"), spec, WHERE) == (
            f"{WHERE}: no SSH handshake with port {port} within 0.2s: is it an SSH server? (check `port:`)")
    assert not failures.speaks_http("127.0.0.1", port, timeout=0.2)  # closed now
    assert failures.speaks_http("127.0.0.1", web)
