"""A caching apt proxy (apt-cacher-ng) on the laptop's lab address, so hosts install packages
without reaching anything but this machine, and repeated installs come from the cache."""

from __future__ import annotations

import socket
import subprocess
import time

from .plan import APT_PROXY_PORT, LAPTOP_ADDR
from .state import CACHE_DIR, STATE_DIR, LabState, proc_start_time, same_process
from .system import LabError

PROXY_URL = f"http://{LAPTOP_ADDR}:{APT_PROXY_PORT}"


def start_proxy(state: LabState) -> None:
    if same_process(state.proxy_pid, state.proxy_start):
        return
    cache = CACHE_DIR / "apt"
    logs = STATE_DIR / "apt-cacher-ng"
    cache.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    conf = logs / "conf"
    conf.mkdir(exist_ok=True)
    # our own config: Debian's default remaps to ftp.debian.org; we fetch only from deb.debian.org
    (conf / "backends_debian").write_text("http://deb.debian.org/debian/\n")
    (conf / "acng.conf").write_text(
        f"CacheDir: {cache}\nLogDir: {logs}\nSupportDir: /usr/lib/apt-cacher-ng\n"
        f"Port: {APT_PROXY_PORT}\nBindAddress: {LAPTOP_ADDR}\nForeGround: 1\n"
        f"PidFile: {logs}/pid\nSocketPath: {logs}/socket\nExThreshold: 30\n"
        "Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian\n"
        "Remap-secdeb: security.debian.org security.debian.org/debian-security "
        "deb.debian.org/debian-security /debian-security ; deb.debian.org/debian-security\n"
    )
    cmd = ["/usr/sbin/apt-cacher-ng", "-c", str(conf)]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=(logs / "stdout.log").open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
    except FileNotFoundError:
        raise LabError("apt-cacher-ng is not installed: apt-get install -y apt-cacher-ng") from None
    state.proxy_pid = proc.pid
    state.proxy_start = proc_start_time(proc.pid)
    state.save()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"apt-cacher-ng exited at start (code {proc.returncode}); see {logs}/stdout.log")
        try:
            socket.create_connection((str(LAPTOP_ADDR), APT_PROXY_PORT), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise LabError(f"apt-cacher-ng did not listen on {PROXY_URL} within 10s; see {logs}/stdout.log")
