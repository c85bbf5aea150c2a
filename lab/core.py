"""The lab as a whole: `up`, `down`, `status` and `shell`, in the order that keeps teardown total."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from pitunnel.taskkit import LAB_INVENTORY
from pitunnel.hostkeys import known_name

from . import limits, machine, net
from .acme import stop_ca
from .aptproxy import PROXY_URL, start_proxy
from .plan import LabPlan, make_plan
from .rootfs import ensure_cloud_rootfs, ensure_rootfs
from .state import STATE_DIR, HostState, LabState, same_process, stop_process
from .system import LabError, require_tools, run

TOOLS = {
    "systemd-nspawn": "systemd-container", "debootstrap": "debootstrap", "iptables": "iptables",
    "ip": "iproute2", "nsenter": "util-linux", "ssh-keygen": "openssh-client",
    "apt-cacher-ng": "apt-cacher-ng",
}
KEYS = STATE_DIR / "keys"
SECRETS = STATE_DIR / "secrets"
LAPTOP_KEY = KEYS / "laptop_ed25519"
KNOWN_HOSTS = STATE_DIR / "known_hosts"


@dataclass
class UpReport:
    plan: LabPlan
    already_up: bool
    rootfs_seconds: float
    total_seconds: float
    inventory: Path


def _preflight() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it makes bridges, firewall rules and containers): run it as root")
    require_tools({tool: pkg for tool, pkg in TOOLS.items() if tool != "apt-cacher-ng"})
    if not Path("/usr/sbin/apt-cacher-ng").exists():
        raise LabError("missing apt-cacher-ng: install with `apt-get install -y apt-cacher-ng`")
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise LabError("the kernel has no overlayfs (modprobe overlay): the lab boots hosts from overlays")


def up(*, pis: int = 1, release: str = "bookworm", inventory: Path = LAB_INVENTORY, fresh: bool = False,
       vpses: int = 1) -> UpReport:
    """Bring the lab to `pis` Pis and `vpses` VPSes (each Pi keeps a tunnel to every VPS) on `release`; a lab
    already like that is left as it is."""
    started = time.monotonic()
    plan = make_plan(pis, vpses)
    _preflight()
    state = LabState.load()
    if (not fresh and state.release == release and state.pis == pis and state.vpses == vpses and _healthy(state)
            and inventory.exists()):
        return UpReport(plan, True, 0.0, time.monotonic() - started, inventory)
    if state.hosts or state.bridges or state.firewall or state.proxy_pid or state.acme_pids:
        down(inventory=inventory)
        state = LabState()
    net.check_range_free(plan)
    state.release, state.pis, state.vpses = release, pis, vpses
    state.save()
    try:
        net.make_networks(plan, state)
        limits.raise_for(len(plan.hosts), state)
        start_proxy(state)
        rootfs, rootfs_seconds = ensure_rootfs(release, proxy=PROXY_URL, log=STATE_DIR / "debootstrap.log")
        laptop_pub = _laptop_key()
        passwords = _passwords(plan)
        for host in plan.hosts:
            root = machine.host_dir(host.name) / "root"
            state.hosts[host.name] = HostState(name=host.name, role=host.role, root=str(root))
            state.save()
            machine.mount_root(host.name, rootfs)
            machine.prepare(host, root, laptop_pub=laptop_pub, password=passwords.get(host.name))
            machine.boot(host, root, state)
        for host in plan.hosts:
            machine.wait_running(state.hosts[host.name])
            _wait_port(str(host.address), host.ssh_port)
        _write_known_hosts(plan, state)
        _write_inventory(plan, inventory, passwords)
    except BaseException:
        down(inventory=inventory)
        raise
    return UpReport(plan, False, rootfs_seconds, time.monotonic() - started, inventory)


def down(*, inventory: Path | None = LAB_INVENTORY) -> list[str]:
    """Remove everything the lab made (and `inventory`, unless None); returns what it removed. Safe to run
    any number of times."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root to tear down what it made: run it as root")
    state = LabState.load()
    removed: list[str] = stop_ca(state)
    for record in state.hosts.values():
        if same_process(record.nspawn_pid, record.nspawn_start):
            os.kill(record.nspawn_pid, 15)  # all hosts shut down at once; stop() waits for each
    for record in state.hosts.values():
        machine.stop(record)
        removed.append(f"host {record.name}")
    for root in (STATE_DIR / "hosts").glob("*/root"):
        machine.unmount_root(root.parent.name)
    if state.proxy_pid:
        stop_process(state.proxy_pid, state.proxy_start, timeout=10)
        removed.append("apt proxy")
    net.remove_networks(state)
    limits.restore(state)
    removed += [f"link {name}" for name in _stray_bridges()]
    for name in _stray_bridges():
        run(["ip", "link", "del", name], check=False)
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR, ignore_errors=True)
    if inventory is not None and inventory.exists():
        inventory.unlink()
        ports = inventory.with_name(inventory.stem + ".ports.yml")
        if ports.exists():
            ports.unlink()
    return removed


def boot_from_seed(name: str, seed: Path, *, timeout: float = 180) -> float:
    """Put a fresh card in the lab Pi `name`: its host stopped, a new overlay on the image with cloud-init (made
    and cached on first use), the enrolment files of `seed` on its boot partition (/boot/firmware), and booted;
    waits until cloud-init has finished. Returns the seconds from boot to cloud-init done. Nothing of the
    lab's own making stays on it (no user, host key or name): cloud-init makes them from the seed."""
    state = LabState.load()
    plan = make_plan(state.pis, state.vpses)
    host = plan.host(name)
    if host.role != "pi":
        raise LabError(f"{name} is a VPS: only a lab Pi boots from an enrolment seed")
    rootfs, _ = ensure_cloud_rootfs(state.release, proxy=PROXY_URL, log=STATE_DIR / "debootstrap.log")
    record = state.hosts[name]
    machine.stop(record)
    for part in ("upper", "work"):
        shutil.rmtree(machine.host_dir(name) / part, ignore_errors=True)
    root = machine.mount_root(name, rootfs)
    machine.prepare_enrolled(host, root, seed)
    started = time.monotonic()
    machine.boot(host, root, state)
    machine.wait_running(record, timeout=timeout)
    done = machine.exec_in(record, "cloud-init status --wait >/dev/null 2>&1; cloud-init status --long", check=False,
                           timeout=timeout)
    if "status: done" not in done.stdout:
        raise LabError(f"{name}: cloud-init did not finish cleanly: {(done.stdout + done.stderr).strip()[-600:]}")
    return time.monotonic() - started


def far_away_inventory(pi: str, path: Path, *, inventory: Path = LAB_INVENTORY) -> Path:
    """The lab's inventory at `path` with no address (nor password) for `pi`, which is then reached through its
    tunnel only (as an enrolled Pi is), and its own known_hosts beside it (PATH.known_hosts) holding the VPSes'
    keys alone: whatever it comes to hold for `pi`, pitunnel put there."""
    doc = yaml.safe_load(inventory.read_text())
    doc["pis"][pi].pop("address", None)
    doc["pis"][pi].pop("password_file", None)
    known = path.with_suffix(".known_hosts")
    plan = make_plan(LabState.load().pis, LabState.load().vpses)
    vpses = tuple(known_name(str(v.address), v.ssh_port) + " " for v in plan.vpses)
    known.write_text("".join(f"{line}\n" for line in KNOWN_HOSTS.read_text().splitlines() if line.startswith(vpses)))
    doc["settings"]["known_hosts"] = str(known)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _stray_bridges() -> list[str]:
    return [item.split()[1] for item in net.leftovers() if item.startswith("link pt-")]


def _healthy(state: LabState) -> bool:
    if not state.hosts:
        return False
    for record in state.hosts.values():
        if not same_process(record.nspawn_pid, record.nspawn_start) or not machine.leader_pid(record):
            return False
    return True


@dataclass
class HostStatus:
    name: str
    role: str
    running: bool
    systemd: str
    address: str
    ssh_port: int


def status() -> list[HostStatus]:
    state = LabState.load()
    if not state.hosts:
        return []
    plan = make_plan(state.pis, state.vpses)
    rows = []
    for record in state.hosts.values():
        host = plan.host(record.name)
        running = same_process(record.nspawn_pid, record.nspawn_start) and bool(machine.leader_pid(record))
        systemd = "-"
        if running:
            systemd = machine.exec_in(record, "systemctl is-system-running", check=False).stdout.strip()
        rows.append(HostStatus(record.name, record.role, running, systemd, str(host.address), host.ssh_port))
    return rows


def record(name: str) -> HostState:
    state = LabState.load()
    if name not in state.hosts:
        known = ", ".join(state.hosts) or "none: run `invoke lab.up`"
        raise LabError(f"no lab host named {name!r} (lab hosts: {known})")
    return state.hosts[name]


def exec_in(name: str, script: str, *, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a shell script as root inside a lab host (through its namespaces, not SSH); with `check`, a
    failure raises LabError."""
    return machine.exec_in(record(name), script, check=check, timeout=timeout)


def sh(name: str, script: str, *, timeout: float = 120) -> str:
    """Run a shell script as root inside a lab host; its output, or a LabError naming the host."""
    done = exec_in(name, script, check=False, timeout=timeout)
    if done.returncode != 0:
        raise LabError(f"{name}: {(done.stderr or done.stdout).strip()[-400:]}")
    return done.stdout


def write_file(name: str, path: str, text: str) -> None:
    """Write `text` to `path` inside a lab host (through its namespaces, as root)."""
    import base64

    encoded = base64.b64encode(text.encode()).decode()
    sh(name, f"mkdir -p \"$(dirname {path})\" && echo {encoded} | base64 -d > {path}")


def cpu_seconds() -> dict[str, float]:
    """CPU seconds each lab host has used so far (see machine.cpu_seconds)."""
    return machine.cpu_seconds(list(LabState.load().hosts.values()))


def password_file(name: str) -> Path:
    """The file holding a lab Pi's login password (the inventory names it; the password is not in it)."""
    return SECRETS / f"{name}.password"


def netns_argv(name: str) -> list[str]:
    """A command prefix that runs a program of this machine in the host's network namespace only (its
    files stay this machine's): for tools the lab hosts lack, like wrk."""
    leader = machine.leader_pid(record(name))
    if not leader:
        raise LabError(f"lab host {name} is not running: run `invoke lab.up`")
    return ["nsenter", "-t", str(leader), "-n"]


def shell_argv(name: str) -> list[str]:
    term = os.environ.get("TERM", "xterm")
    return [*machine.nsenter(record(name)), f"TERM={term}", "HOME=/root", "/bin/bash", "-l"]


def _laptop_key() -> str:
    KEYS.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not LAPTOP_KEY.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pitunnel-lab-laptop", "-f", str(LAPTOP_KEY)])
    return LAPTOP_KEY.with_suffix(".pub").read_text().strip()


def _passwords(plan: LabPlan) -> dict[str, str]:
    SECRETS.mkdir(parents=True, exist_ok=True, mode=0o700)
    out: dict[str, str] = {}
    for host in plan.pis:
        path = password_file(host.name)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, (secrets.token_urlsafe(12) + "\n").encode())
            os.close(fd)
        os.chmod(path, 0o600)  # the inventory refuses a password file others could read (one from an older lab)
        out[host.name] = path.read_text().strip()
    return out


def _wait_port(address: str, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise LabError(f"nothing listens on {address}:{port} after {timeout:.0f}s")


def _write_known_hosts(plan: LabPlan, state: LabState) -> None:
    """The lab made every host key itself, so it can vouch for them: the laptop's known_hosts for the lab."""
    lines = []
    for host in plan.hosts:
        ssh_dir = Path(state.hosts[host.name].root) / "etc/ssh"
        name = known_name(str(host.address), host.ssh_port)
        for pub in sorted(ssh_dir.glob("ssh_host_*_key.pub")):
            keytype, key = pub.read_text().split()[:2]
            lines.append(f"{name} {keytype} {key}")
    KNOWN_HOSTS.write_text("\n".join(lines) + "\n")


def _write_inventory(plan: LabPlan, path: Path, passwords: dict[str, str]) -> None:
    """inventory/lab.yml: the lab described in the same format a user writes for real hosts."""
    pis: dict[str, object] = {}
    several = [v.name for v in plan.vpses] if len(plan.vpses) > 1 else None
    for index, host in enumerate(plan.pis, start=1):
        pis[host.name] = {
            "address": str(host.address),
            **({"vps": several} if several else {}),
            "user": "pi",
            "password_file": str(password_file(host.name)),
            "tunnels": {
                "ssh": {"type": "ssh", "local_port": 22, "remote_port": 12345 + index, "public": True},
                "api": {"type": "http", "local_port": 80, "path": f"/{host.name}/"},
            },
        }
    doc = {
        "settings": {"known_hosts": str(KNOWN_HOSTS), "laptop_key": str(LAPTOP_KEY)},
        "defaults": {"key": str(LAPTOP_KEY)},
        "vps": {v.name: {"address": str(v.address), "port": v.ssh_port, "user": "root"} for v in plan.vpses},
        "pis": pis,
    }
    header = ("# Written by `invoke lab.up`: the local lab's hosts, in the inventory format of inventory/example.yml.\n"
              "# Secrets are not here: passwords and keys stay in files under " + str(STATE_DIR) + ".\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
