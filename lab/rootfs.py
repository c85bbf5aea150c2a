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
