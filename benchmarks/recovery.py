"""Benchmark: recovery time after each fault, for three setups side by side in one run, on the lab.

- pitunnel: as `invoke provision` leaves it.
- seed: the blog post's settings on the same hosts (ServerAliveInterval 60, CountMax 3, no ConnectTimeout, no
  ExitOnForwardFailure, no server keepalive, no reaper, `autossh -M 0`, AUTOSSH_GATETIME=0,
  its unit without Restart=).
- sidedoor: Debian's `sidedoor` package on the Pi (its own config and retry loop), same VPS.
- pitunnel-2vps (asked for by name): pitunnel with a second VPS, the Pi keeping a tunnel to each; recovery is
  the time until the Pi is reachable through ANY VPS (the `vps-power-cut` fault cuts the first one).

Each setup gets fresh lab hosts. A run that does not recover within --timeout counts as not
recovered; before the next run the setup is reset by hand (as a human would have to).
Prints a table and writes benchmarks/results/recovery.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import lab
from lab import INVENTORY, PITUNNEL, Setup, inject, reachable, target, tunnel_pss_kb, tunnel_rss_kb, wait_recovered
from pitunnel.taskkit import Flags, run_play
from pitunnel.roles.site import provision_pi as provision_pis
from pitunnel.roles.site import provision_vps

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FORWARDS = "-R 0.0.0.0:12346:127.0.0.1:22 -R 127.0.0.1:20000:127.0.0.1:80"

SEED = Setup(name="seed", user="pitunnel", daemon="autossh")
SIDEDOOR = Setup(name="sidedoor", user="sidedoor", daemon="sidedoor")

SEED_UNIT = f"""[Unit]
Description=AutoSSH tunnel service - SSH
After=network.target

[Service]
Environment="AUTOSSH_GATETIME=0"
ExecStart=/usr/bin/autossh -M 0 -N -F /etc/seed/ssh_config {FORWARDS} pitunnel-vps
User=pitunnel

[Install]
WantedBy=multi-user.target
"""

SIDEDOOR_DEFAULTS = f"""OPTIONS='{FORWARDS}'
REMOTE_SERVER='-p 12345 pitunnel@198.18.0.10'
"""


def _sh(host: str, script: str) -> str:
    return lab.sh(host, script, timeout=300)


_write = lab.write_file


def _stop_pitunnel_on_pi() -> None:
    _sh("pi1", "systemctl disable --now --quiet pitunnel@vps.service pitunnel-watchdog@vps.service")


def make_seed() -> None:
    """The seed's exact client and server settings, on the hosts pitunnel provisioned."""
    _stop_pitunnel_on_pi()
    _sh("pi1", "mkdir -p /etc/seed && sed -e '/ExitOnForwardFailure/d' -e '/ConnectTimeout/d' "
               "-e 's/ServerAliveInterval .*/ServerAliveInterval 60/' "
               "-e 's/ServerAliveCountMax .*/ServerAliveCountMax 3/' -e '/RemoteForward/d' "
               "/etc/pitunnel/vps/ssh_config > /etc/seed/ssh_config")
    _write("pi1", "/etc/systemd/system/autossh-ssh-tunnel.service", SEED_UNIT)
    _sh("pi1", "systemctl daemon-reload && systemctl enable --now --quiet autossh-ssh-tunnel.service")
    _sh("vps", "systemctl disable --now --quiet pitunnel-reaper.service; "
               "sed -i -e '/ClientAlive/d' /etc/ssh/sshd_config.d/10-pitunnel.conf; systemctl reload ssh")


def make_sidedoor() -> None:
    """Debian's sidedoor on the Pi, with the Pi's own tunnel key, against pitunnel's VPS."""
    _stop_pitunnel_on_pi()
    _sh("pi1", "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends sidedoor >/dev/null && "
               "install -m 600 -o sidedoor -g sidedoor /var/lib/pitunnel/.ssh/pitunnel_ed25519 /etc/sidedoor/id_rsa && "
               "install -m 644 /etc/pitunnel/vps/known_hosts /etc/sidedoor/known_hosts")
    _write("pi1", "/etc/default/sidedoor", SIDEDOOR_DEFAULTS)
    _sh("pi1", "systemctl restart sidedoor")


UNITS = {"pitunnel": "pitunnel@vps.service", "seed": "autossh-ssh-tunnel.service", "sidedoor": "sidedoor.service",
         "pitunnel-2vps": "pitunnel@vps.service pitunnel@vps2.service"}
MAKERS: dict[str, Callable[[], None]] = {"pitunnel": lambda: None, "seed": make_seed, "sidedoor": make_sidedoor,
                                         "pitunnel-2vps": lambda: None}
SETUPS = {"pitunnel": PITUNNEL, "seed": SEED, "sidedoor": SIDEDOOR, "pitunnel-2vps": PITUNNEL}
VPSES = {"pitunnel-2vps": 2}  # lab VPSes per setup (1 unless named)


def reset(name: str) -> None:
    """What a human does when a tunnel stays dead: free the VPS side and restart the Pi side."""
    setup = SETUPS[name]
    lab.exec_in("pi1", f"pkill -CONT -u {setup.user}; systemctl restart {UNITS[name]}", check=False)
    for vps in ("vps", "vps2")[:VPSES.get(name, 1)]:
        lab.exec_in(vps, "pkill -u pitunnel", check=False)
    if not wait_recovered(target("pi1"), time.monotonic(), 90):
        raise RuntimeError(f"{name}: not reachable even after a manual reset")


def bench_setup(name: str, faults: list[str], runs: int, timeout: float, release: str) -> dict[str, object]:
    lab.up(pis=1, release=release, fresh=True, vpses=VPSES.get(name, 1))

    def both(p):  # type: ignore[no-untyped-def]
        provision_vps(p)
        provision_pis(p)

    run_play(both, Flags(inventory=str(INVENTORY)), quiet=True)
    MAKERS[name]()
    if not wait_recovered(target("pi1"), time.monotonic(), 90):
        raise RuntimeError(f"{name}: tunnel never came up")
    rows: dict[str, object] = {"rss_kib": tunnel_rss_kb("pi1", SETUPS[name]), "pss_kib": tunnel_pss_kb("pi1", SETUPS[name])}
    for fault in faults:
        times: list[float | None] = []
        for _ in range(runs):
            seconds = inject(fault, "pi1", timeout=timeout, setup=SETUPS[name])
            times.append(seconds)
            shown = f"{seconds:.1f} s" if seconds is not None else "NOT recovered"
            print(f"  {name:<9} {fault:<17} {shown}", flush=True)
            if seconds is None or not reachable(target("pi1")):
                reset(name)
        rows[fault] = times
    return rows


def main(faults: list[str], runs: int = 3, timeout: float = 60, setups: list[str] | None = None,
         release: str = "bookworm") -> dict[str, object]:
    chosen = setups or ["pitunnel", "seed", "sidedoor"]
    results: dict[str, object] = {}
    try:
        for name in chosen:
            results[name] = bench_setup(name, faults, runs, timeout, release)
    finally:
        lab.down()
    doc = {"benchmark": "recovery", "date": time.strftime("%Y-%m-%d"), "release": release, "runs": runs,
           "timeout_s": timeout, "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
           "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "recovery.json").write_text(json.dumps(doc, indent=2))
    print(table(doc))
    return doc


def table(doc: dict[str, object]) -> str:
    results: dict[str, dict[str, object]] = doc["results"]  # type: ignore[assignment]
    lines = [f"\nRecovery after each fault ({doc['date']}, {doc['machine']}, lab hosts {doc['release']}, "
             f"runs={doc['runs']}, gave up after {doc['timeout_s']} s)", "",
             "| fault | setup | runs | median s | max s | recovered |", "|---|---|---|---|---|---|"]
    faults = [k for k in next(iter(results.values())) if k not in ("rss_kib", "pss_kib")] if results else []
    for fault in faults:
        for setup, rows in results.items():
            times: list[float | None] = rows[fault]  # type: ignore[assignment]
            ok = [t for t in times if t is not None]
            median = f"{statistics.median(ok):.1f}" if ok and len(ok) == len(times) else "-"
            worst = f"{max(ok):.1f}" if ok and len(ok) == len(times) else f"> {doc['timeout_s']}"
            lines.append(f"| {fault} | {setup} | {len(times)} | {median} | {worst} | {len(ok)}/{len(times)} |")
    lines += ["", "| setup | tunnel RSS on the Pi (KiB) | PSS (KiB) |", "|---|---|---|"]
    lines += [f"| {setup} | {rows['rss_kib']} | {rows.get('pss_kib', '-')} |" for setup, rows in results.items()]
    return "\n".join(lines)
