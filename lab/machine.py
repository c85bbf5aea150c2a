"""One lab host: a fresh overlay on the cached root filesystem, booted by systemd-nspawn."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from .aptproxy import PROXY_URL
from .plan import HostPlan
from .state import STATE_DIR, HostState, LabState, proc_start_time, same_process, stop_process
from .system import LabError, run

FILES = Path(__file__).with_name("files")


def host_dir(name: str) -> Path:
    return STATE_DIR / "hosts" / name


def mount_root(name: str, rootfs: Path) -> Path:
    base = host_dir(name)
    upper, work, merged = base / "upper", base / "work", base / "root"
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    proc = run(["mount", "-t", "overlay", "overlay", "-o",
                f"lowerdir={rootfs},upperdir={upper},workdir={work}", str(merged)], check=False)
    if proc.returncode != 0:
        raise LabError(f"cannot mount an overlay for {name} ({proc.stderr.strip()}): the kernel needs overlayfs")
    return merged


def unmount_root(name: str) -> None:
    merged = host_dir(name) / "root"
    if os.path.ismount(merged):
        run(["umount", "-l", str(merged)], check=False)


def prepare(host: HostPlan, root: Path, *, laptop_pub: str, password: str | None) -> None:
    """Make the image this host: name, host keys, network, apt proxy, and what its role starts with."""
    (root / "etc/hostname").write_text(f"{host.name}\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {host.name}\n::1 localhost\n")
    run(["ssh-keygen", "-A", "-f", str(root)])
    _network(host, root)
    if host.role == "vps":
        _prepare_vps(host, root, laptop_pub)
    else:
        _prepare_pi(host, root, laptop_pub, password or "")


def prepare_enrolled(host: HostPlan, root: Path, seed: Path) -> None:
    """Make a fresh cloud-init image this Pi as a card with an enrolment seed would: its boot partition's files
    in /boot/firmware, the lab's network and apt proxy, the Pi's API; no user, host key nor name of its own
    (cloud-init makes them from the seed at first boot)."""
    firmware = root / "boot/firmware"
    firmware.mkdir(parents=True, exist_ok=True)
    for name in ("user-data", "meta-data", "network-config"):
        if (seed / name).exists():
            (firmware / name).write_bytes((seed / name).read_bytes())
            (firmware / name).chmod(0o600)
    _network(host, root)
    _pi_api(root)


def _network(host: HostPlan, root: Path) -> None:
    (root / "etc/apt/apt.conf.d/01pitunnel-lab-proxy").write_text(f'Acquire::http::Proxy "{PROXY_URL}";\n')
    _unit(root, "lab-net.service", f"""[Unit]
Description=Lab network (address {host.address} via {host.gateway})
DefaultDependencies=no
Before=network.target network-online.target
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/sbin/ip link set host0 up
ExecStart=/sbin/ip addr replace {host.address}/{host.prefix} dev host0
ExecStart=/sbin/ip route replace default via {host.gateway}

[Install]
WantedBy=network-online.target multi-user.target
""", wanted_by=("network-online.target", "multi-user.target"))


def _prepare_vps(host: HostPlan, root: Path, laptop_pub: str) -> None:
    # a fresh cloud server: root logs in by the key given at order time; sshd moved off port 22
    config = root / "etc/ssh/sshd_config"
    config.write_text(config.read_text().replace("#Port 22", f"Port {host.ssh_port}"))
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(laptop_pub + "\n")
    (ssh_dir / "authorized_keys").chmod(0o600)


def _prepare_pi(host: HostPlan, root: Path, laptop_pub: str, password: str) -> None:
    # a fresh Raspberry Pi OS: user pi with a password, passwordless sudo, password SSH login on
    run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", "pi"])
    run(["chroot", str(root), "chpasswd"], input=f"pi:{password}\n")
    sudoers = root / "etc/sudoers.d/010_pi-nopasswd"
    sudoers.write_text("pi ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    _pi_api(root)


def _pi_api(root: Path) -> None:
    api = root / "usr/local/lib/pi-api/pi-api.py"
    api.parent.mkdir(parents=True, exist_ok=True)
    api.write_text((FILES / "pi-api.py").read_text())
    api.chmod(0o755)
    _unit(root, "pi-api.service", """[Unit]
Description=The Pi's API (lab stand-in)
After=network.target

[Service]
ExecStart=/usr/local/lib/pi-api/pi-api.py
Restart=always
DynamicUser=no

[Install]
WantedBy=multi-user.target
""", wanted_by=("multi-user.target",))


def _unit(root: Path, name: str, text: str, *, wanted_by: tuple[str, ...]) -> None:
    unit = root / "etc/systemd/system" / name
    unit.write_text(text)
    for target in wanted_by:
        wants = root / "etc/systemd/system" / f"{target}.wants"
        wants.mkdir(exist_ok=True)
        link = wants / name
        if not link.is_symlink():
            link.symlink_to(f"/etc/systemd/system/{name}")


def drop_stale_link(name: str) -> bool:
    """The host-side veth systemd-nspawn made for lab host `name` (vb-NAME), left behind by an nspawn that ended
    hard (a power cut, a killed run): removed, or the host's next boot fails with "File exists". Only called
    for a lab host that is not running. True if there was one."""
    link = f"vb-{name}"[:15]
    if run(["ip", "link", "show", "dev", link], check=False).returncode != 0:
        return False
    run(["ip", "link", "del", "dev", link], check=False)
    return True


def boot(host: HostPlan, root: Path, state: LabState) -> None:
    log = host_dir(host.name) / "console.log"
    drop_stale_link(host.name)
    cmd = ["systemd-nspawn", "--quiet", "-D", str(root), "-M", host.name, "--boot", "--register=no",
           "--keep-unit", f"--network-bridge={host.bridge}", "--link-journal=no",
           "--resolv-conf=off", "--timezone=off", "--console=read-only"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    record = state.hosts[host.name]
    record.nspawn_pid = proc.pid
    record.nspawn_start = proc_start_time(proc.pid)
    state.save()


def leader_pid(record: HostState) -> int:
    """The container's PID 1 as seen from this machine (the nspawn process's child)."""
    try:
        children = Path(f"/proc/{record.nspawn_pid}/task/{record.nspawn_pid}/children").read_text().split()
    except OSError:
        return 0
    return int(children[0]) if children else 0


def cpu_seconds(records: list[HostState]) -> dict[str, float]:
    """CPU time each host has used so far: over every process in its PID namespace, its own time plus
    what the children it reaped used. Each process counts once (a dead one in its reaper's total), so
    the difference of two readings is what the host used in between."""
    spaces = {}
    for record in records:
        leader = leader_pid(record)
        try:
            spaces[os.readlink(f"/proc/{leader}/ns/pid")] = record.name
        except OSError:
            continue  # not running: it uses nothing
    ticks = dict.fromkeys(spaces.values(), 0)
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            name = spaces.get(os.readlink(f"/proc/{pid}/ns/pid"))
            if name is None:
                continue
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # gone meanwhile: its reaper counts it
        ticks[name] += process_ticks(stat)
    hz = os.sysconf("SC_CLK_TCK")
    return {name: t / hz for name, t in ticks.items()}


def process_ticks(stat: str) -> int:
    """utime + stime + cutime + cstime from a /proc/PID/stat line (the name may hold spaces or ')')."""
    fields = stat[stat.rfind(")") + 2:].split()
    return sum(int(x) for x in fields[11:15])


def nsenter(record: HostState) -> list[str]:
    leader = leader_pid(record)
    if not leader:
        raise LabError(f"lab host {record.name} is not running: run `invoke lab.up`")
    return ["nsenter", "-t", str(leader), "-a", "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]


def exec_in(record: HostState, script: str, *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a shell script inside the host (given on stdin, so no path of this machine leaks in)."""
    return run([*nsenter(record), "/bin/sh", "-s"], input=script, check=check, timeout=timeout)


def wait_running(record: HostState, *, timeout: float = 90) -> str:
    """Wait until systemd inside says the system is up; returns its final state."""
    deadline = time.monotonic() + timeout
    last = "starting"
    while time.monotonic() < deadline:
        if not leader_pid(record):
            time.sleep(0.05)
            continue
        proc = exec_in(record, "systemctl is-system-running", check=False, timeout=10)
        last = proc.stdout.strip() or last
        if last in ("running", "degraded"):
            return last
        time.sleep(0.1)
    raise LabError(f"lab host {record.name} did not finish booting in {timeout:.0f}s (systemd says {last!r}); "
                   f"see {host_dir(record.name)}/console.log")


def stop(record: HostState) -> None:
    stop_process(record.nspawn_pid, record.nspawn_start, timeout=20)
    unmount_root(record.name)
    drop_stale_link(record.name)


def halt(host: HostPlan, state: LabState, *, power_cut: bool = False, timeout: float = 90) -> None:
    """Stop a running host: a clean shutdown (its services stop and close their connections), or a power
    cut (its PID 1 killed: nothing it had open is ever closed, the kernel ends the whole container at once)."""
    record = state.hosts[host.name]
    if not same_process(record.nspawn_pid, record.nspawn_start):
        raise LabError(f"lab host {host.name} is not running: run `invoke lab.up`")
    leader = leader_pid(record)
    if power_cut and leader:
        os.kill(leader, signal.SIGKILL)
    stop_process(record.nspawn_pid, record.nspawn_start, timeout=timeout)


def start(host: HostPlan, state: LabState, *, timeout: float = 90) -> None:
    """Boot a halted host on the same root filesystem, and wait until its systemd is up."""
    boot(host, Path(state.hosts[host.name].root), state)
    wait_running(state.hosts[host.name], timeout=timeout)


def reboot(host: HostPlan, state: LabState, *, power_cut: bool = False, timeout: float = 90,
           off_seconds: float = 0) -> None:
    """Restart a running host on the same root filesystem, and wait until its systemd is up again.

    A clean reboot shuts the host down first (its services stop and close their connections, as
    when a provider restarts a VPS); a power cut kills the host's PID 1, so nothing it had open is
    ever closed (as when a Pi loses power): the kernel ends the whole container at once. The host
    stays off for `off_seconds` before it boots again (its address answers nobody meanwhile).
    """
    halt(host, state, power_cut=power_cut, timeout=timeout)
    time.sleep(off_seconds)
    start(host, state, timeout=timeout)
