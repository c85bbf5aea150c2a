"""Debian root filesystems for lab hosts, built once per recipe with debootstrap and cached."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from .state import CACHE_DIR
from .system import LabError, run

RELEASES = ("bookworm", "trixie")
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "iproute2",
    "python3", "procps", "netbase", "ca-certificates",
)
RECIPE_VERSION = 1  # bump when the post-build steps below change


def recipe(release: str) -> dict[str, object]:
    return {"release": release, "variant": "minbase", "packages": sorted(PACKAGES),
            "mirror": MIRROR, "version": RECIPE_VERSION}


def recipe_key(release: str) -> str:
    blob = json.dumps(recipe(release), sort_keys=True).encode()
    return f"{release}-{hashlib.sha256(blob).hexdigest()[:12]}"


def cached_rootfs(release: str) -> Path | None:
    path = CACHE_DIR / "rootfs" / recipe_key(release)
    return path if (path / ".pitunnel-complete").exists() else None


def ensure_rootfs(release: str, *, proxy: str | None, log: Path) -> tuple[Path, float]:
    """The cached root filesystem for `release`, building it first if needed: (path, seconds spent)."""
    if release not in RELEASES:
        raise LabError(f"unknown release {release!r}: use one of {', '.join(RELEASES)}")
    found = cached_rootfs(release)
    if found:
        return found, 0.0
    started = time.monotonic()
    final = CACHE_DIR / "rootfs" / recipe_key(release)
    work = final.with_name(final.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    env_proxy = [f"http_proxy={proxy}"] if proxy else []
    cmd = ["env", *env_proxy, "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
           release, str(work), MIRROR]
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
    proc = run(cmd, check=False, timeout=1200)
    with log.open("a") as out:
        out.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise LabError(f"debootstrap {release} failed (exit {proc.returncode}); see {log}")
    _generalise(work)
    (work / ".pitunnel-complete").write_text(json.dumps(recipe(release)))
    work.rename(final)
    return final, time.monotonic() - started


def _generalise(root: Path) -> None:
    """Make the tree an image: no host keys, machine id or host name of the build machine."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").write_text("localhost\n")
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    for lists in (root / "var/lib/apt/lists").glob("*_Packages"):
        lists.unlink()


# An image that enrols itself from its boot partition, as Raspberry Pi OS does since trixie: Debian's own
# cloud-init, its NoCloud datasource reading the seed from /boot/firmware. `debootstrap --include=cloud-init`
# fails to configure its Python dependencies, so it is installed with apt inside a copy of the plain image;
# without `locales` and a generated locale, cloud-init's locale module fails (Raspberry Pi OS has both).
CLOUD_PACKAGES = ("cloud-init", "locales")
CLOUD_VERSION = 2  # bump when the steps below change
NOCLOUD_CFG = """# the lab's stand-in for Raspberry Pi OS's setting: the NoCloud seed is on the boot partition
datasource_list: [NoCloud, None]
datasource:
  NoCloud:
    seedfrom: file:///boot/firmware/
# a lab host's network is set up by the lab (lab-net.service); a real Pi's comes from network-config
network:
  config: disabled
"""


def cloud_key(release: str) -> str:
    blob = json.dumps({"packages": CLOUD_PACKAGES, "cfg": NOCLOUD_CFG, "version": CLOUD_VERSION}).encode()
    return f"{recipe_key(release)}-cloud-{hashlib.sha256(blob).hexdigest()[:8]}"


def ensure_cloud_rootfs(release: str, *, proxy: str | None, log: Path) -> tuple[Path, float]:
    """The cached image with cloud-init for `release`, made from the plain one first if needed."""
    base, spent = ensure_rootfs(release, proxy=proxy, log=log)
    final = CACHE_DIR / "rootfs" / cloud_key(release)
    if (final / ".pitunnel-complete").exists():
        return final, spent
    started = time.monotonic()
    work = final.with_name(final.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    run(["cp", "-a", "--reflink=auto", str(base), str(work)], timeout=600)
    (work / ".pitunnel-complete").unlink()
    proxy_opt = [f"-oAcquire::http::Proxy={proxy}"] if proxy else []
    script = (f"apt-get {' '.join(proxy_opt)} update && DEBIAN_FRONTEND=noninteractive apt-get {' '.join(proxy_opt)} "
              f"install -y --no-install-recommends {' '.join(CLOUD_PACKAGES)} && apt-get clean && "
              "sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen && locale-gen")
    cmd = ["systemd-nspawn", "--quiet", "-D", str(work), "--register=no", "--keep-unit", "--resolv-conf=off",
           "--timezone=off", "/bin/sh", "-c", script]
    proc = run(cmd, check=False, timeout=1200)
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise LabError(f"installing {', '.join(CLOUD_PACKAGES)} into the {release} image failed (exit "
                       f"{proc.returncode}); see {log}")
    (work / "etc/cloud/cloud.cfg.d/99-pitunnel-lab-nocloud.cfg").write_text(NOCLOUD_CFG)
    (work / "boot/firmware").mkdir(parents=True, exist_ok=True)
    _generalise(work)
    (work / ".pitunnel-complete").write_text(json.dumps({"base": recipe(release), "packages": CLOUD_PACKAGES}))
    work.rename(final)
    return final, spent + time.monotonic() - started
