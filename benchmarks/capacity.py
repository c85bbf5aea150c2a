"""Benchmark: the capacity of one VPS (issue 27). For each n: a fresh lab (one VPS, pi1), an inventory of n Pis
(pi1 and n - 1 that exist only in it, each with an ssh and an http tunnel on fixed ports), provisioned by
pitunnel; the n - 1 simulated Pis are real OpenSSH clients run from pi1's network namespace and container:

- each its own ed25519 key, made on pi1 by the tunnel account as the Pi role makes it, authorised on the VPS
  by provision-pi's own step (roles/vps/steps.authorise) with its own listeners;
- each its own ssh config, the Pi role's template rendered for that Pi (keepalives, ExitOnForwardFailure,
  ConnectTimeout, pinned VPS host key: pi1's pin file, written by provision-pi);
- each its own autossh with the unit's settings (-M 0, AUTOSSH_GATETIME=0, AUTOSSH_POLL), started again 2 s after
  it exits (the unit's Restart=always, RestartSec=2): the same restart and back-off as a real Pi's ssh; the Pi's
  watchdog is not simulated.

They are started by PID and ended by PID (also on failure or Ctrl-C); lab.down removes the hosts at the end.
The VPS's processes are moved into a memory cgroup made for the run (cgroup v1, a child of this process's own)
so that its used memory is the kernel's view of the VPS alone; the cgroup is removed at the end.
Prints a table and writes benchmarks/results/capacity.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import yaml

import lab
from benchmarks import capacity_variants
from benchmarks.capacity_doc import (Reading, Row, base_kb, cpu_per_hour, document, failure_kinds, maxstartups_drops,
                                     per_tunnel, storm_timeline, table, used_kb)
from benchmarks.capacity_variants import SSHD_PSS, VariantRow
from benchmarks.inventory_scale import revision
from benchmarks.provision import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MOST = 1999  # sims' ports: 30001..31998 (ssh) and 32001..33998 (http), apart from the lab's own
SIM_DIR = "/var/lib/pitunnel/sim"  # on pi1, in the tunnel account's home (provision-pi made it)
MEMORY_ROOT = Path("/sys/fs/cgroup/memory")
VARIANT_SESSIONS = 100  # sessions each variant is measured with (fewer when the run has fewer simulated Pis)


def fleet_inventory(folder: Path, n: int) -> Path:
    """The lab's inventory with n - 1 more Pis on its VPS, reached through their tunnels only (no address: no
    task dials them), an ssh tunnel on 30000 + i and an http tunnel on 32000 + i each."""
    doc = yaml.safe_load(lab.INVENTORY.read_text())
    for i in range(1, n):
        doc["pis"][f"sim{i}"] = {"vps": "vps", "tunnels": {"ssh": {"type": "ssh", "remote_port": 30000 + i},
                                                            "web": {"type": "http", "remote_port": 32000 + i}}}
    path = folder / "capacity.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def pitunnel(*args: str, cwd: Path) -> tuple[float, int, str]:
    """`pitunnel ARGS` as a user runs it: wall time, exit code, output."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", "from pitunnel.console import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd)
    return time.monotonic() - started, done.returncode, done.stdout + done.stderr


def make_sims(fleet: Path, names: list[str]) -> dict[str, str]:
    """On pi1: each simulated Pi's key (made by the tunnel account, as the Pi role makes it) and its ssh config
    (the Pi role's template for that Pi, its own key); returns each one's public key."""
    from pitunnel.inventory import load_inventory
    from pitunnel.roles.pi.locations import key_comment
    from pitunnel.roles.pi.role import ROLE
    from pitunnel.roles.pi.steps import context

    inv = load_inventory(fleet)
    vps = inv.vps["vps"]
    script = [f"set -e\ninstall -d -o pitunnel -g pitunnel -m 700 {SIM_DIR}\ncd {SIM_DIR}"]
    for name in names:
        pi = inv.pis[name]
        config = ROLE.render("ssh_config.j2", **{**context(pi, vps), "key_path": f"{SIM_DIR}/{name}"})
        script.append(f"rm -f {name} {name}.pub\n"
                      f"runuser -u pitunnel -- ssh-keygen -q -t ed25519 -N '' -C {key_comment(pi)} -f {name}\n"
                      f"cat > {name}.conf <<'EOF'\n{config}EOF\necho \"{name} $(cat {name}.pub)\"")
    out = lab.sh("pi1", "\n".join(script), timeout=1800)
    return {words[0]: " ".join(words[1:3]) for words in (line.split() for line in out.splitlines()) if len(words) >= 3}


def authorise(fleet: Path, keys: dict[str, str]) -> None:
    """The simulated Pis' keys on the VPS through provision-pi's own step, each with its own listeners."""
    from pitunnel.play import Play
    from pitunnel.roles.contract import PiOffer, listens
    from pitunnel.roles.vps import steps
    from pitunnel.sshkeys import parse_public_key
    from pitunnel.taskkit import Flags, run_play

    def body(play: Play) -> None:
        inv = play.inventory
        vps = inv.vps["vps"]
        offers = [PiOffer(name, parse_public_key(key), listens(inv.pis[name].path("vps"))) for name, key in keys.items()]
        play.each([vps], lambda remote: steps.authorise(remote, inv, vps, offers, play.reporter, play.options.mode))

    run_play(body, Flags(inventory=str(fleet), limit="vps"))


RESTART_SEC = 2  # the Pi unit's RestartSec (roles/pi/defaults.yml): systemd restarts autossh when it exits


def start_sims(names: list[str], poll: int, config: str = "conf", cpus: str = "") -> list[int]:
    """One autossh per simulated Pi on pi1, as the tunnel account, with the unit's settings (its ssh config:
    NAME.`config`), restarted RESTART_SEC after it exits as the unit's Restart=always does (each restart
    counted in NAME.restarts); each in a process group of its own, whose leader's PID is returned; on `cpus`
    only (taskset), when given."""
    pin = f"taskset -c {cpus} " if cpus else ""
    loop = (f"while :; do AUTOSSH_GATETIME=0 AUTOSSH_POLL={poll} /usr/bin/autossh -M 0 -N -F \"$1\" pitunnel-vps "
            f"2>> \"$3\"; echo \"$?\" >> \"$2\"; sleep {RESTART_SEC}; done")
    lines = [f"cd {SIM_DIR}"] + [
        f"{pin}setsid setpriv --reuid=pitunnel --regid=pitunnel --init-groups sh -c '{loop}' sim {name}.{config} "
        f"{name}.restarts {name}.err </dev/null >/dev/null 2>&1 &\necho $!" for name in names]
    return [int(p) for p in lab.sh("pi1", "\n".join(lines), timeout=600).split()]


def stop_sims(pids: list[int]) -> None:
    """End the simulated Pis, by PID: each one's process group (its restart loop, autossh and ssh). procps'
    kill: dash's own takes no `--`, and without it a negative PID reads as a signal."""
    if pids:
        lab.exec_in("pi1", f"for p in {' '.join(map(str, pids))}; do /bin/kill -TERM -- -$p 2>/dev/null; done; true",
                    check=False, timeout=120)


def restarts() -> int:
    """How many times the simulated Pis' autossh exited and was started again (as systemd would)."""
    out = lab.sh("pi1", f"cat {SIM_DIR}/*.restarts 2>/dev/null | wc -l; true").split()
    return int(out[0]) if out else 0


def client_errors() -> str:
    """What the simulated Pis' ssh wrote to stderr since clear_client_errors."""
    return lab.sh("pi1", f"cat {SIM_DIR}/*.err 2>/dev/null; true", timeout=120)


def clear_client_errors() -> None:
    """Empty each simulated Pi's stderr file in place (its ssh appends to it)."""
    lab.sh("pi1", f"for f in {SIM_DIR}/*.err; do [ -f \"$f\" ] && : > \"$f\"; done; true")


def sshd_journal() -> str:
    """sshd's lines in the VPS's journal, stamped with the kernel's monotonic clock (the containers share it)."""
    return lab.sh("vps", "journalctl -q -o short-monotonic -t sshd -t sshd-session --no-pager || true", timeout=120)


def listening(ports: set[int]) -> int:
    """How many of `ports` listen on the VPS now."""
    return len(ports & capacity_variants.listening_ports())


def wait_listening(ports: set[int], since: float, timeout: float) -> tuple[float | None, int]:
    """(seconds from `since` until every port listens, or None; ports still not listening)."""
    left = len(ports)
    while time.monotonic() - since < timeout:
        left = len(ports) - listening(ports)
        if left == 0:
            return time.monotonic() - since, 0
        time.sleep(0.5)
    return None, left


def read_vps(group: Path) -> Reading:
    pss = [int(x) for x in lab.sh("vps", SSHD_PSS).split()]
    usage = int((group / "memory.usage_in_bytes").read_text())
    every = sum(int(x) for x in lab.sh("vps", ALL_PSS).split())
    return Reading(len(pss), sum(pss), used_kb((group / "memory.stat").read_text(), usage), every)


ALL_PSS = "for p in /proc/[0-9]*; do awk '/^Pss:/ {print $2}' $p/smaps_rollup 2>/dev/null; done; true"


@contextmanager
def vps_cgroup() -> Iterator[Path]:
    """Every process of the running VPS in a memory cgroup of its own (charges moved with them), removed at the
    end (its processes back in this process's cgroup first)."""
    mine = next(line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                if line.split(":")[1] == "memory")
    parent = MEMORY_ROOT / mine.lstrip("/")
    group = parent / f"pitunnel-capacity-{os.getpid()}"
    group.mkdir()
    try:
        try:
            (group / "memory.move_charge_at_immigrate").write_text("3")
        except OSError:
            pass  # this kernel does not move charges: the cgroup counts what the VPS uses from now on
        for pid in vps_pids():
            try:
                (group / "cgroup.procs").write_text(str(pid))
            except OSError:
                continue  # ended meanwhile
        yield group
    finally:
        for _ in range(20):  # its processes may still fork while they are moved back (an interrupted run)
            for left in (group / "cgroup.procs").read_text().split():
                try:
                    (parent / "cgroup.procs").write_text(left)
                except OSError:
                    continue
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.5)
        else:
            print(f"bench.capacity: could not remove {group}: `rmdir {group}` once the lab is down", flush=True)


def vps_pids() -> list[int]:
    """Every process in the VPS container's PID namespace, seen from here."""
    leader = lab.netns_argv("vps")[2]
    space = os.readlink(f"/proc/{leader}/ns/pid")
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{name}/ns/pid") == space:
                found.append(int(name))
        except OSError:
            continue
    return found


REAPER_TICKS = ("for d in /proc/[0-9]*; do grep -q 'pitunnel-reaper.service' $d/cgroup 2>/dev/null && "
                "cut -d')' -f2 $d/stat | awk '{print $12 + $13 + $14 + $15}'; done; getconf CLK_TCK")


def reaper_cpu_s() -> float:
    """CPU seconds the reaper unit's processes used so far (their own and their reaped children's)."""
    *ticks, hz = lab.sh("vps", REAPER_TICKS).split()
    return sum(int(t) for t in ticks) / int(hz)


def sshd_started() -> float | None:
    """When the VPS's sshd started, on this machine's monotonic clock (the containers share it)."""
    out = lab.sh("vps", "systemctl show -p ExecMainStartTimestampMonotonic --value ssh.service").strip()
    return int(out) / 1e6 if out.isdigit() and int(out) else None


def drops() -> int:
    """sshd's MaxStartups drops in the VPS's journal. Its every boot counts: a container's boot ID is this
    machine's (the kernel's), so `journalctl -b` would not tell the boots apart; the caller subtracts."""
    return maxstartups_drops(lab.sh("vps", "journalctl -q -o cat -u ssh.service --no-pager || true"))


def run_variants(n: int, fleet: Path, names: list[str], group: Path, poll: int, cpus: str = "") -> list[VariantRow]:
    """capacity_variants' variants, one after the other, each with the same VARIANT_SESSIONS simulated Pis."""
    from pitunnel.inventory import load_inventory

    inv = load_inventory(fleet)
    vps = inv.vps["vps"]
    sample = names[:VARIANT_SESSIONS]
    ports = {t.listener.port for name in sample for t in inv.pis[name].path("vps").tunnels}
    listeners = [t.listener.spec for path in inv.pis_on(vps) for t in path.tunnels]
    rows = []
    for variant in capacity_variants.variants(listeners):
        found = capacity_variants.measure(variant, n, sample, ports, group, sim_dir=SIM_DIR,
                                          start=lambda chosen, config: start_sims(chosen, poll, config, cpus),
                                          stop=stop_sims, wait=wait_listening)
        if found is not None:
            print(f"  variant {found.name} at n={n}: {found.pss_kb_per_tunnel} kB PSS, {found.used_kb_per_tunnel} kB "
                  f"used per tunnel ({found.sessions} sessions)", flush=True)
            rows.append(found)
    return rows


MAXSTARTUPS_DROPIN = "/etc/ssh/sshd_config.d/05-bench-maxstartups.conf"  # read before sshd_config's own lines


def set_maxstartups(spec: str) -> None:
    """The VPS's sshd with MaxStartups `spec` (a global setting: sshd takes it before any Match block), kept across
    the power cut; the lab is removed at the end."""
    lab.sh("vps", f"echo 'MaxStartups {spec}' > {MAXSTARTUPS_DROPIN} && sshd -t && systemctl reload ssh")


def run_n(n: int, work: Path, *, release: str, off: float, window: float, timeout: float, poll: int,
          variants: list[VariantRow] | None = None, maxstartups: str = "", cpus: str = "") -> Row:
    from pitunnel.inventory import load_inventory

    lab.up(pis=1, release=release, fresh=True)
    fleet = fleet_inventory(work, n)
    names = [f"sim{i}" for i in range(1, n)]
    exits: dict[str, int] = {}
    cold, exits["provision-vps cold"], out = pitunnel("provision-vps", "-i", str(fleet), cwd=work)
    _, exits["provision-pi pi1"], out2 = pitunnel("provision-pi", "-l", "pi1", "-i", str(fleet), cwd=work)
    if exits["provision-vps cold"] or exits["provision-pi pi1"]:
        raise SystemExit(f"bench.capacity: n={n}: provisioning failed:\n{out[-2000:]}\n{out2[-2000:]}")
    print(f"  n={n}: provision-vps cold {cold:.1f} s", flush=True)
    if maxstartups:
        set_maxstartups(maxstartups)
    inv = load_inventory(fleet)
    ports = {t.listener.port for path in inv.pis_on(inv.vps["vps"]) for t in path.tunnels}
    authorise(fleet, make_sims(fleet, names))
    pids: list[int] = []
    try:
        with vps_cgroup() as group:
            if variants is not None and names:
                variants.extend(run_variants(n, fleet, names, group, poll, cpus))
            time.sleep(5)
            one = read_vps(group)
            started = time.monotonic()
            pids = start_sims(names, poll, cpus=cpus)
            first, left = wait_listening(ports, started, timeout)
            print(f"  n={n}: {len(pids)} simulated Pis started, all listening after {first} s ({left} not)", flush=True)
            time.sleep(10)
            at_n = read_vps(group)
        pss, used, procs = per_tunnel(one, at_n, len(names)) if names else (0, 0, 0.0)
        at_start = drops()
        nochange, exits["provision-vps no-change"], _ = pitunnel("provision-vps", "-i", str(fleet), cwd=work)
        status, exits["status"], _ = pitunnel("status", "--json", "-i", str(fleet), cwd=work)
        verify, exits["verify -l pi1"], _ = pitunnel("verify", "--json", "-l", "pi1", "-i", str(fleet), cwd=work)
        print(f"  n={n}: provision-vps no-change {nochange:.1f} s, status {status:.1f} s, verify -l pi1 {verify:.1f} s "
              f"(exits {exits})", flush=True)
        cpu_before = reaper_cpu_s()
        time.sleep(window)
        reaper = cpu_per_hour(reaper_cpu_s() - cpu_before, window)
        before_cut = restarts()
        clear_client_errors()
        lab.vps_power_cut(seconds=off)
        booted = time.monotonic()
        all_back, left_behind = wait_listening(ports, booted, timeout)
        sshd_at = sshd_started()
        restarted = restarts() - before_cut
        storm = storm_timeline(sshd_journal(), sshd_at) if sshd_at else None
        failures = failure_kinds(client_errors())
        print(f"  n={n}: after the power cut, per 10 s from sshd's start: {storm}\n  n={n}: the Pis' ssh errors: "
              f"{json.dumps(failures)}", flush=True)
        back = None if all_back is None else all_back + booted - (sshd_at or booted)
        row = Row(n, pss, used, None if back is None else round(back, 1), left_behind, max(0, drops() - at_start), round(cold, 1),
                  round(nochange, 1), round(status, 1), round(verify, 1), reaper, sshd_pss_kb_total=at_n.sshd_pss_kb,
                  used_kb_total=at_n.used_kb, base_used_kb=base_kb(one, pss), processes_per_tunnel=procs,
                  refused_at_start=at_start, first_connect_s=None if first is None else round(first, 1), exits=exits,
                  autossh_restarts=restarted, storm=storm, client_failures=failures)
    finally:
        stop_sims(pids)
    print(f"  n={n}: {json.dumps(row.__dict__)}", flush=True)
    return row


def main(sizes: list[int], *, release: str = "bookworm", off: float = 20, window: float = 60, timeout: float = 300,
         poll: int = 10, variants: bool = True, maxstartups: str = "", cpus: str = "") -> dict[str, object]:
    if max(sizes) > MOST:
        raise SystemExit(f"bench.capacity: --pis at most {MOST} (the simulated Pis' fixed ports), not {max(sizes)}")
    if not (MEMORY_ROOT / "memory.stat").exists():
        raise SystemExit("bench.capacity: needs cgroup v1's memory controller at /sys/fs/cgroup/memory")
    rows: list[Row] = []
    tried: list[VariantRow] = []
    doc: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="pitunnel-capacity-") as folder:
        try:
            for n in sizes:
                at_largest = variants and n == max(sizes)
                rows.append(run_n(n, Path(folder), release=release, off=off, window=window, timeout=timeout, poll=poll,
                                  variants=tried if at_largest else None, maxstartups=maxstartups, cpus=cpus))
                doc = write(rows, tried, release)
                doc["maxstartups"] = maxstartups or "sshd's default (10:30:100)"  # after each n: a later n that fails leaves the earlier figures
                doc["simulated_pis_on_cpus"] = cpus or "any"
        finally:
            lab.down()
    print(table(doc))
    if tried:
        print("\nVariants (the VPS's cost per tunnel session with one thing changed):\n" + capacity_variants.table(tried))
    return doc


def write(rows: list[Row], tried: list[VariantRow], release: str) -> dict[str, object]:
    doc = document(rows, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=machine(),
                   revision=revision(), release=release)
    doc["variants"] = [asdict(v) for v in tried]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "capacity.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc
