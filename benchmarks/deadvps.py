"""Benchmark: a dead VPS. The wall time of `status` and `provision-pi` when the VPS and every Pi drop packets
(the laptop away from home, the VPS down), at several fleet sizes.

No lab host is needed: the VPS and the Pis get addresses in 198.18.240.0/25 (inside the range set aside for
test networks, 198.18.0.0/15, apart from the lab's own segments; run it under the lab's lock, as `invoke
bench.deadvps` is documented: the lab refuses to start while another route is in its range), routed into a
network namespace made for the run,
whose firewall drops whatever it is sent (a connection gets no answer, as from a host that is off). The
namespace and its route are removed at the end, whatever happens. Needs root.
Prints a table and writes benchmarks/results/deadvps.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NAMESPACE, DEVICE = "deadvps-bench", "deadvps0"  # not pt-: the lab removes stray pt- links
HERE, THERE = "198.18.240.253", "198.18.240.254"  # the /30 between the laptop and the namespace
NETWORK = "198.18.240.0/25"
TASKS = ("status", "provision-pi")


@contextmanager
def dropping() -> Iterator[None]:
    """NETWORK routed, for the `with` block, into a network namespace of its own whose firewall drops every
    packet (no answer, no ICMP: as a host that is off); the namespace and the route are removed at the end."""
    ns = ["ip", "netns", "exec", NAMESPACE]
    taken = subprocess.run(["ip", "route", "show", "198.18.240.0/24", "root", "198.18.240.0/24"], check=True,
                           capture_output=True, text=True).stdout.strip()
    if taken:  # never route over somebody else's use of the range
        raise SystemExit(f"bench.deadvps: 198.18.240.0/24 is routed already ({taken}); remove that route first")
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    try:
        for command in (["ip", "link", "add", DEVICE, "type", "veth", "peer", "name", "eth0", "netns", NAMESPACE],
                        ["ip", "addr", "add", f"{HERE}/30", "dev", DEVICE], ["ip", "link", "set", DEVICE, "up"],
                        [*ns, "ip", "addr", "add", f"{THERE}/30", "dev", "eth0"], [*ns, "ip", "link", "set", "eth0", "up"],
                        [*ns, "iptables", "-w", "5", "-A", "INPUT", "-j", "DROP"],
                        [*ns, "iptables", "-w", "5", "-A", "FORWARD", "-j", "DROP"],
                        ["ip", "route", "add", NETWORK, "via", THERE]):
            subprocess.run(command, check=True)
        _wait_dropping()
        yield
    finally:
        subprocess.run(["ip", "link", "del", DEVICE], check=False)  # its peer and the route go with it
        subprocess.run(["ip", "netns", "del", NAMESPACE], check=False)


def _wait_dropping(within: float = 10) -> None:
    """Wait until a connection to the VPS's address gets no answer (the veth's carrier can take a moment, and
    meanwhile a connection fails at once); stop if anything answers there."""
    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection(("198.18.240.1", 22), timeout=0.5).close()
        except socket.timeout:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        raise SystemExit("bench.deadvps: 198.18.240.1:22 answered: the namespace is not dropping")


def inventory(folder: Path, pis: int, connect_timeout: float) -> Path:
    """A VPS and `pis` Pis (at most 100), each with an ssh tunnel (so `via: auto` falls back to it), all in
    NETWORK."""
    doc = {"settings": {"laptop_key": None, "known_hosts": str(folder / "known_hosts")},
           "defaults": {"connect_timeout": connect_timeout},
           "vps": {"vps": {"address": "198.18.240.1"}},
           "pis": {f"pi{n}": {"address": f"198.18.240.{n + 1}", "vps": "vps",
                              "tunnels": {"ssh": {"type": "ssh", "remote_port": "auto"}}}
                   for n in range(1, pis + 1)}}
    path = folder / "hosts.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def timed(task: str, hosts: Path) -> tuple[float, int]:
    """Run `pitunnel TASK -i hosts` as a user would: its wall time and exit code."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", "from pitunnel.console import main; main()", task, "-i", str(hosts)],
                          capture_output=True, text=True, cwd=hosts.parent)
    return time.monotonic() - started, done.returncode


def main(sizes: list[int], *, connect_timeout: float = 5, runs: int = 1) -> None:
    rows: list[dict[str, object]] = []
    with dropping(), tempfile.TemporaryDirectory(prefix="pitunnel-deadvps-") as tmp:
        for pis in sizes:
            hosts = inventory(Path(tmp), pis, connect_timeout)
            for task in TASKS:
                for _ in range(runs):
                    seconds, code = timed(task, hosts)
                    rows.append({"task": task, "pis": pis, "seconds": round(seconds, 1), "exit": code,
                                 "connect_timeout": connect_timeout})
                    print(f"{task:<14} {pis:>3} Pis  {seconds:6.1f} s  exit {code}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deadvps.json").write_text(json.dumps(rows, indent=2) + "\n")
