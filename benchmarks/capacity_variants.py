"""bench.capacity's variants (issue 27's candidates): the VPS's memory per tunnel session with one thing changed,
each measured with the same k simulated Pis of the same lab, one after the other:

- `as provisioned`: the operator's sshd with pitunnel's Match block (PermitListen: any port on the tunnels'
  addresses; each key's permitlisten says which port is whose);
- `listed`: the Match block as pitunnel wrote it before issue 27, every Pi's listener in PermitListen: sshd
  reads that list again into every session, so its cost grows with the inventory;
- `no PAM`: a second sshd for the tunnel account alone beside the operator's: its own port, `UsePAM no` (no PAM
  stack, no logind session per tunnel), the same host keys and Match block;
- `no PAM, no re-exec`: that sshd with `-r`: sessions are forks of the listener and share its pages, but each
  then has the listener's address layout and stack canary (sshd(8): "not recommended"; from OpenSSH 9.8 the
  listener always fork+execs sshd-session, so trixie's sshd cannot run without re-exec at all);
- `malloc trimmed`: the operator's sshd with glibc's malloc told to give freed heap back at once
  (`GLIBC_TUNABLES`: `trim_threshold` and `top_pad` 0, `mmap_threshold` 64 kB, one arena), set in a drop-in
  of ssh.service and sshd restarted (Debian's unit ends only the listener: the sessions stay). sshd passes
  its environment on to the sessions it re-executes; the setup proves the unit has it.

Each variant is set up on the VPS and undone after (the drop-in put back and sshd reloaded; the second sshd a
transient unit, stopped). The second sshd runs under the container's systemd (systemd-run), so it is charged to
the VPS's memory cgroup like the operator's sshd.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lab

from benchmarks.capacity_doc import used_kb

DROPIN = "/etc/ssh/sshd_config.d/10-pitunnel.conf"
SECOND_PORT = 2222
SECOND_CONFIG = "/etc/ssh/pitunnel-bench-sshd_config"
SECOND_UNIT = "pitunnel-bench-sshd"
MALLOC_DROPIN = "/etc/systemd/system/ssh.service.d/pitunnel-bench-malloc.conf"
TUNABLES = ("glibc.malloc.trim_threshold=0:glibc.malloc.top_pad=0:glibc.malloc.mmap_threshold=65536:"
            "glibc.malloc.arena_max=1")


@dataclass(frozen=True)
class Variant:
    name: str
    setup: str  # shell on the VPS
    undo: str
    port: int | None  # the sims' VPS port: None for the operator's sshd


def variants(listeners: list[str]) -> list[Variant]:
    second = (f"cat > {SECOND_CONFIG} <<'EOF'\n# bench.capacity: a second sshd for the tunnel account alone\n"
              f"Port {SECOND_PORT}\nHostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n"
              "HostKey /etc/ssh/ssh_host_rsa_key\nUsePAM no\nAllowUsers pitunnel\nPidFile /run/pitunnel-bench-sshd.pid\n"
              f"Include {DROPIN}\nEOF\nsshd -t -f {SECOND_CONFIG}\n")
    start = ("systemd-run -q --unit {unit} /usr/sbin/sshd -D {flags}-f {config}\n"
             "for i in $(seq 50); do ss -Htln | grep -q ':{port} ' && exit 0; sleep 0.2; done; exit 1")
    stop = f"systemctl stop {SECOND_UNIT} 2>/dev/null; systemctl reset-failed {SECOND_UNIT} 2>/dev/null; rm -f {SECOND_CONFIG}; true"
    listed = " ".join(listeners)
    restart = "systemctl daemon-reload && systemctl restart ssh"  # Type=notify: back when sshd listens
    # the unit's environment (sshd writes its process title over its own environ: /proc/PID/environ won't do)
    has_env = "systemctl show -p Environment --value ssh | tr ' ' '\\n' | grep -qx 'GLIBC_TUNABLES={t}'"
    return [
        Variant("as provisioned", "true", "true", None),
        Variant("listed", f"cp -p {DROPIN} /root/10-pitunnel.conf.bench && "
                          f"sed -i 's/^    PermitListen .*/    PermitListen {listed}/' {DROPIN} && sshd -t && systemctl reload ssh",
                f"mv /root/10-pitunnel.conf.bench {DROPIN} && sshd -t && systemctl reload ssh", None),
        Variant("no PAM", second + start.format(unit=SECOND_UNIT, flags="", config=SECOND_CONFIG, port=SECOND_PORT),
                stop, SECOND_PORT),
        Variant("no PAM, no re-exec", second + start.format(unit=SECOND_UNIT, flags="-r ", config=SECOND_CONFIG,
                                                             port=SECOND_PORT), stop, SECOND_PORT),
        Variant("malloc trimmed",
                f"mkdir -p {Path(MALLOC_DROPIN).parent} && printf '[Service]\\nEnvironment=GLIBC_TUNABLES=%s\\n' "
                f"'{TUNABLES}' > {MALLOC_DROPIN} && {restart} && {has_env.format(t=TUNABLES)}",
                f"rm -f {MALLOC_DROPIN} && {restart}", None),
    ]


@dataclass(frozen=True)
class VariantRow:
    name: str
    n: int
    sessions: int
    pss_kb_per_tunnel: int
    used_kb_per_tunnel: int


# every sshd process of the VPS (OpenSSH 9.8+ runs sessions as sshd-session, 10.0 logins as sshd-auth)
SSHD_PSS = ("for p in $(pgrep -x sshd; pgrep -x sshd-session; pgrep -x sshd-auth); do "
            "awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup 2>/dev/null; done; true")


def sims_config(names: list[str], sim_dir: str, port: int | None) -> None:
    """Each sim's ssh config for this variant (`NAME.v.conf`): its own, or pointed at `port` with the pinned
    VPS host key still checked (HostKeyAlias: the name the pin file has it under)."""
    if port is None:
        script = " && ".join(f"cp {n}.conf {n}.v.conf" for n in names)
    else:
        script = (f"alias=$(awk 'NR==1 {{print $1}}' $(awk '/UserKnownHostsFile/ {{print $2; exit}}' {names[0]}.conf))\n"
                  + "\n".join(f"sed 's/^    Port .*/    Port {port}\\n    HostKeyAlias '\"$alias\"'/' {n}.conf > {n}.v.conf"
                              for n in names))
    lab.sh("pi1", f"cd {sim_dir}\n{script}\nchown pitunnel: *.v.conf", timeout=300)


def measure(variant: Variant, n: int, names: list[str], ports: set[int], group: Path, *, sim_dir: str,
            start: Callable[[list[str], str], list[int]], stop: Callable[[list[int]], None],
            wait: Callable[[set[int], float, float], tuple[float | None, int]]) -> VariantRow | None:
    """One variant: set up, k sims started with its configs, the VPS's growth per session read, all undone.
    None if its sims' ports were still held before it (printed: a reading then would count nothing), or if
    they did not all listen within 120 s (printed)."""
    if not gone(ports):
        print(f"  variant {variant.name}: skipped, the sims' ports are still held on the VPS", flush=True)
        return None
    lab.sh("vps", variant.setup, timeout=120)
    pids: list[int] = []
    try:
        sims_config(names, sim_dir, variant.port)
        time.sleep(3)
        before_pss, before_used = pss(), used(group)
        pids = start(names, "v.conf")
        done, left = wait(ports, time.monotonic(), 120)
        if done is None:
            print(f"  variant {variant.name}: {left} of {len(ports)} listeners not there after 120 s", flush=True)
            return None
        time.sleep(5)
        k = len(names)
        return VariantRow(variant.name, n, k, round((pss() - before_pss) / k), round((used(group) - before_used) / k))
    finally:
        stop(pids)
        gone(ports)
        lab.sh("vps", variant.undo, timeout=120)


def pss() -> int:
    return sum(int(x) for x in lab.sh("vps", SSHD_PSS).split())


def used(group: Path) -> int:
    return used_kb((group / "memory.stat").read_text(), int((group / "memory.usage_in_bytes").read_text()))


def listening_ports() -> set[int]:
    """The TCP ports that listen on the VPS now."""
    out = lab.exec_in("vps", "ss -Htln", check=False, timeout=30).stdout
    return {int(line.split()[3].rpartition(":")[2]) for line in out.splitlines() if len(line.split()) > 3}


def gone(ports: set[int], timeout: float = 60) -> bool:
    """Whether none of `ports` listens on the VPS (the sims' sessions ended) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not ports & listening_ports():
            return True
        time.sleep(0.5)
    return False


def table(rows: list[VariantRow]) -> str:
    lines = ["| variant | Pis in the inventory | sessions | sshd PSS per tunnel kB | used per tunnel kB |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r.name} | {r.n:,} | {r.sessions} | {r.pss_kb_per_tunnel:,} | {r.used_kb_per_tunnel:,} |" for r in rows]
    return "\n".join(lines)
