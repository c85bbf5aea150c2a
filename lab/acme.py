"""The lab's ACME CA: Let's Encrypt's pebble on the laptop's lab address, with pebble-challtestsrv as the DNS it
asks (every name is the lab VPS unless a test says otherwise).

Real ACME, nothing shortcut: the VPS's certbot talks to pebble over TLS (the lab's own CA vouches for pebble's
address: the inventory's acme.ca_bundle), and pebble's validator really fetches each http-01 challenge from the
VPS's port 80 across the lab network (PEBBLE_VA_ALWAYS_VALID is never set). Started on demand by `start_ca`,
each process recorded (PID and start time) before anything waits on it; `lab.down` stops them.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .plan import LAPTOP_ADDR, VPS_ADDR
from .state import STATE_DIR, LabState, proc_start_time, same_process, stop_process
from .system import LabError, run

ACME_DIR = STATE_DIR / "acme"
ACME_PORT = 14000  # pebble's ACME directory, on the laptop's lab address (the VPS's certbot calls it)
MANAGEMENT = "127.0.0.1:15000"  # pebble's management API: its issuing root (the laptop only)
DNS = "127.0.0.1:8053"  # challtestsrv's DNS, asked by pebble alone
DNS_MANAGEMENT = "127.0.0.1:8055"


@dataclass(frozen=True)
class LabCA:
    directory: str  # the ACME directory URL the VPS's certbot uses
    ca_bundle: Path  # the lab CA that signed pebble's own TLS certificate (acme.ca_bundle)
    root: Path  # pebble's issuing root: what a client trusts for the certificates pebble issues
    log: Path  # pebble's log: one line per ACME request it handled


def _certificates() -> None:
    """The lab CA and, signed by it, pebble's TLS certificate for the laptop's lab address."""
    ca_key, ca, key, csr, cert = (ACME_DIR / n for n in ("ca.key", "ca.pem", "pebble.key", "pebble.csr", "pebble.pem"))
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=pitunnel lab CA", "-keyout", str(ca_key), "-out", str(ca)])
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=pebble", "-keyout", str(key), "-out", str(csr)])
    ext = ACME_DIR / "san.ext"
    ext.write_text(f"subjectAltName=IP:{LAPTOP_ADDR},IP:127.0.0.1\n")
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
         "-days", "2", "-extfile", str(ext), "-out", str(cert)])


def _start(state: LabState, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (ACME_DIR / f"{name}.log").open("w")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed: apt-get install -y pebble (or run scripts/setup.sh)") from None
    state.acme_pids.append([proc.pid, proc_start_time(proc.pid)])
    state.save()
    return proc


def _get(url: str, context: ssl.SSLContext, procs: list[subprocess.Popen[bytes]], timeout: float = 15) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise LabError(f"an ACME process (PID {dead[0].pid}) exited at start (code {dead[0].returncode}); "
                           f"see {ACME_DIR}/*.log")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bytes(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise LabError(f"{url} did not answer within {timeout:.0f}s; see {ACME_DIR}/*.log") from None
            time.sleep(0.1)


def start_ca() -> LabCA:
    """Pebble and its DNS, up (started once per lab; `lab.down` stops them). The lab must be up."""
    state = LabState.load()
    if not state.hosts:
        raise LabError("the lab is down: start it first (lab.up)")
    found = lab_ca()
    if state.acme_pids and all(same_process(pid, start) for pid, start in state.acme_pids) and found.root.exists():
        return found
    stop_ca(state)
    ACME_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    _certificates()
    config = {"pebble": {"listenAddress": f"{LAPTOP_ADDR}:{ACME_PORT}", "managementListenAddress": MANAGEMENT,
                         "certificate": str(ACME_DIR / "pebble.pem"), "privateKey": str(ACME_DIR / "pebble.key"),
                         "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
                         "externalAccountBindingRequired": False}}
    (ACME_DIR / "pebble.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
    # no random sleep before each validation, no nonces refused at random; the validation itself is real
    env.update(PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_VA_ALWAYS_VALID="0")
    procs = [
        _start(state, "challtestsrv", ["pebble-challtestsrv", "-dns01", DNS, "-http01", "", "-https01", "",
                                       "-tlsalpn01", "", "-management", DNS_MANAGEMENT,
                                       "-defaultIPv4", str(VPS_ADDR), "-defaultIPv6", ""], env),
        _start(state, "pebble", ["pebble", "-config", str(ACME_DIR / "pebble.json"), "-dnsserver", DNS], env),
    ]
    context = ssl.create_default_context(cafile=str(found.ca_bundle))
    _get(found.directory, context, procs)
    found.root.write_bytes(_get(f"https://{MANAGEMENT}/roots/0", context, procs))
    return found


def lab_ca() -> LabCA:
    return LabCA(f"https://{LAPTOP_ADDR}:{ACME_PORT}/dir", ACME_DIR / "ca.pem", ACME_DIR / "root.pem",
                 ACME_DIR / "pebble.log")


def dns_fail(name: str) -> None:
    """From now on the lab's DNS answers SERVFAIL for `name`: it resolves to nothing, the VPS least of all."""
    request = urllib.request.Request(f"http://{DNS_MANAGEMENT}/set-servfail",
                                     data=json.dumps({"host": name.rstrip(".") + "."}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def stop_ca(state: LabState) -> list[str]:
    """Stop the processes start_ca recorded (only those: PID and start time must both match)."""
    stopped = []
    for pid, start in state.acme_pids:
        if same_process(pid, start):
            stop_process(pid, start, timeout=10)
            stopped.append(f"acme process {pid}")
    state.acme_pids.clear()
    state.save()
    return stopped
