"""The lab's tasks: `invoke lab.up`, `lab.down`, `lab.status`, `lab.shell`, `lab.fault`, and `invoke demo`
(tasks.py puts demo at the top level)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from invoke import Collection, Context, Exit, task

from pitunnel.taskkit import LAB_INVENTORY, ROOT, FlagsTask
from pitunnel.inventory import load_inventory
from pitunnel.tasks import provision, verify

from . import core
from .inventories import HTTPS_NAME, https_inventory, status_page_inventory
from .faults import NAMES, away_from_home, inject, reachable, target, vps_power_cut, wait_recovered
from .report import print_status
from .system import LabError


@task(help={
    "pis": "how many Pis, each behind its own NAT (default 1)",
    "release": "Debian release of every host: bookworm or trixie (default bookworm)",
    "fresh": "rebuild every host from a clean copy even if the lab is already up as asked",
    "vpses": "how many VPSes (1 or 2; default 1): with 2, every Pi keeps a tunnel to each",
})
def lab_up(c: Context, pis: int = 1, release: str = "bookworm", fresh: bool = False, vpses: int = 1) -> None:
    """Boot the local lab (a VPS and Pis behind NAT) and write inventory/lab.yml."""
    try:
        report = core.up(pis=pis, release=release, fresh=fresh, vpses=vpses)
    except LabError as exc:
        raise Exit(f"lab.up: {exc}", code=1) from None
    verb = "already up" if report.already_up else f"up in {report.total_seconds:.1f}s"
    built = f" (root filesystem built in {report.rootfs_seconds:.0f}s)" if report.rootfs_seconds else ""
    print(f"lab {verb}{built}: inventory {report.inventory.relative_to(ROOT)}")
    print_status(core.status())


@task(help={})
def lab_down(c: Context) -> None:
    """Remove every trace of the lab: hosts, links, addresses, firewall rules, mounts, processes."""
    try:
        removed = core.down()
    except LabError as exc:
        raise Exit(f"lab.down: {exc}", code=1) from None
    print(f"lab down: removed {', '.join(removed)}" if removed else "lab down: nothing to remove")


@task(help={})
def lab_status(c: Context) -> None:
    """Show each lab host: running or not, systemd's state, address and SSH port."""
    rows = core.status()
    if not rows:
        print("lab is down (`invoke lab.up` brings it up)")
        return
    print_status(rows)


@task(help={"host": "lab host to enter: vps, pi1, pi2, ..."})
def lab_shell(c: Context, host: str) -> None:
    """Open a root shell inside a lab host (through its namespaces, not SSH)."""
    try:
        argv = core.shell_argv(host)
    except LabError as exc:
        raise Exit(f"lab.shell: {exc}", code=1) from None
    sys.stdout.flush()
    os.execvp(argv[0], argv)


@task(help={"fault": "one of: silent-drop, router-reboot, nat-forgets, link-down-20s, link-down-60s, link-down-10min, kill-ssh, kill-autossh, "
                     "stop-ssh, restart-vps-sshd, restart-nginx, reboot-vps, reboot-pi, vps-unreachable-at-boot, vps-power-cut",
            "pi": "the lab Pi to hit (default pi1)", "timeout": "give up waiting after this many seconds"})
def lab_fault(c: Context, fault: str, pi: str = "pi1", timeout: float = 300) -> None:
    """Inject a fault into the provisioned lab and print how long until the Pi is reachable again."""
    if fault not in NAMES:
        raise Exit(f"lab.fault: unknown fault {fault!r}; one of: {', '.join(NAMES)}", code=2)
    seconds = inject(fault, pi, timeout=timeout)
    if seconds is None:
        raise Exit(f"{fault}: {pi} NOT reachable again within {timeout:.0f}s", code=1)
    print(f"{fault}: {pi} reachable again through the VPS {seconds:.1f}s after the fault ended")


@task(help={"pis": "how many Pis in the lab (default 1)",
            "release": "Debian release of the lab's hosts: bookworm or trixie",
            "https": "also start the lab's ACME CA (pebble): certificates by certbot, every route over HTTPS",
            "vpses": "how many VPSes (1 or 2); with 2 the demo ends by cutting one VPS's power: the Pi stays reachable",
            "enroll": "pi1 far away instead: enrolled from its boot files (pitunnel enroll), booted from a fresh "
                      "cloud-init image, provisioned through its own tunnel, the laptop never on its LAN",
            "status_page": "the VPS's status page too (HTTPS, as --https): prints its URL and the file holding its "
                           "user:password"},
      klass=FlagsTask, shorts={"https": "s", "enroll": "e", "status_page": "t"})  # not -h: that is --help
def demo(c: Context, pis: int = 1, release: str = "bookworm", https: bool = False, vpses: int = 1,
         enroll: bool = False, status_page: bool = False) -> None:
    """The whole story on the local lab: lab up, provision, verify, and how to ssh into a Pi via the VPS."""
    lab_up(c, pis=pis, release=release, vpses=vpses)
    if enroll:
        enrolment(c)
        return
    https = https or status_page
    page = status_page_inventory() if status_page else None
    path = page[0] if page else https_inventory() if https else LAB_INVENTORY
    print("\n== provision (VPS, then Pis) ==")
    provision(c, inventory=str(path))
    print("\n== verify ==")
    verify(c, inventory=str(path))
    inv = load_inventory(path, save_allocations=False)
    vps = next(iter(inv.vps.values()))
    if vpses > 1:
        failover(seconds=30)
    print("\nEvery Pi answers through the VPS. Try:")
    for pi in inv.pis.values():
        print(f"  pitunnel -i {path} ssh {pi.name}      (or once: pitunnel -i {path} ssh-config --write; "
              f"then ssh {pi.name})")
        for t in pi.tunnels:
            if t.kind == "ssh" and t.public:
                print(f"  ssh -i {pi.key} -o UserKnownHostsFile={inv.settings.known_hosts} "
                      f"-o HostKeyAlias={pi.address} -p {t.remote_port} {pi.user}@{vps.address}")
            elif t.kind == "http" and https:
                print(f"  curl --cacert {inv.settings.verify_ca_file} --resolve {HTTPS_NAME}:443:{vps.address} "
                      f"https://{HTTPS_NAME}{t.path or '/'}")
            elif t.kind == "http":
                print(f"  curl http://{vps.address}{t.path or '/'}")
    if page:
        print(f"Status page: {page[2]}  user:password in {page[1]} (root only)")
        print(f"  chromium --host-resolver-rules='MAP {HTTPS_NAME} {vps.address}' {page[2]}   (the name is the lab's)")
    print("When done: invoke lab.down")


ENROLL_INVENTORY = ROOT / "inventory" / "lab-enroll.yml"


def enrolment(c: Context) -> None:
    """`demo --enroll`: pi1 has no address in the inventory; enroll writes its boot files, it boots a fresh
    image with them, and is provisioned and verified through its own tunnel, the laptop away from its home."""
    import tempfile

    from pitunnel.sshcli import cached
    from pitunnel.tasks import enroll, provision_pi, provision_vps, status

    path = core.far_away_inventory("pi1", ENROLL_INVENTORY)
    print(f"\n== {path.relative_to(ROOT)}: the lab's inventory, with no address for pi1 ==")
    print("\n== provision-vps ==")
    provision_vps(c, inventory=str(path))
    with tempfile.TemporaryDirectory(prefix="pitunnel-bootfs-") as boot, away_from_home("pi1") as sent:
        print(f"\n== enroll pi1: its boot partition is {boot} ==")
        enroll(c, pi="pi1", boot=boot, inventory=str(path))
        print("\n== pi1 boots a fresh image (Debian's cloud-init) from those files, far from the laptop ==")
        seconds = core.boot_from_seed("pi1", Path(boot))
        print(f"cloud-init done {seconds:.1f}s after power on")
        for _ in range(60):  # its bootstrap tunnel comes up on its own
            if "0.0.0.0:12346" in core.sh("vps", "ss -Hltn"):
                break
            time.sleep(1)
        print("\n== status ==")
        try:
            status(c, inventory=str(path))
        except Exit:
            pass  # a tunnel of another Pi may be down: the table says which
        print("\n== provision-pi (through pi1's own tunnel) ==")
        provision_pi(c, inventory=str(path))
        print("\n== verify ==")
        verify(c, inventory=str(path))
        config = cached(load_inventory(path, save_allocations=False))  # the Host blocks `pitunnel ssh` uses
        print(f"\n== ssh -F {config} pi1 hostname (the system's OpenSSH, by pi1's tunnel) ==")
        answered = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "pi1", "hostname"],
                                  capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        print(answered.stdout.strip() or answered.stderr.strip())
        print(f"\nPackets the laptop sent to pi1's LAN address all along: {sent()}")
    print(f"\npi1 answers through the VPS, from anywhere. Try:\n  ssh -F {config} pi1\n  pitunnel -i {path} ssh pi1\n"
          f"  pitunnel -i {path} ssh-config --write; ssh pi1   (writes ~/.ssh/pitunnel.conf and one Include line)\n"
          "When done: invoke lab.down")


def failover(seconds: float) -> None:
    """Cut the first VPS's power for `seconds` and show pi1 through each VPS meanwhile: down through the one
    that is off, up through the other all along; then how soon the path through the first is back."""
    import threading
    import time

    from .faults import vps_addresses

    first, second = vps_addresses()[:2]
    t = target("pi1")
    print(f"\n== failover: VPS vps ({first}) loses power for {seconds:.0f}s; pi1 through each VPS ==")
    ended: list[float] = []
    cut = threading.Thread(target=lambda: ended.append(vps_power_cut("vps", seconds=seconds)), daemon=True)
    started = time.monotonic()
    cut.start()
    while cut.is_alive():
        up = {address: reachable(t, address) for address in (first, second)}
        print(f"  t={time.monotonic() - started:5.1f}s  via {first}: {'UP  ' if up[first] else 'DOWN'}  "
              f"via {second}: {'UP' if up[second] else 'DOWN'}", flush=True)
        time.sleep(3)
    cut.join()
    back = wait_recovered(t, ended[0], 60, via=first)
    shown = f"{back:.1f}s after it booted" if back is not None else "NOT within 60s"
    print(f"  vps is back: pi1 through {first} again {shown}; through {second} it never stopped")


ns = Collection("lab")
ns.add_task(lab_up, "up")
ns.add_task(lab_down, "down")
ns.add_task(lab_status, "status")
ns.add_task(lab_shell, "shell")
ns.add_task(lab_fault, "fault")
