"""Benchmark: the data path, direct to the Pi vs through the VPS (Nginx and the tunnel), on the lab.

This machine plays the laptop: it reaches the lab Pi directly on its home network, and through the
VPS as anyone on the internet would. With one Pi, freshly provisioned:

- HTTP: `wrk --latency` against the Pi's API, directly (http://PI/) and through Nginx and the
  tunnel (http://VPS/pi1/), at each connection count: requests/s, p50 and p99 latency.
- Bulk: 100 MB of random bytes over SSH to and from the Pi's login, directly (PI:22) and through the
  tunnel's public port on the VPS (VPS:12346, which ends at the Pi's sshd through the tunnel).
- Tuning: the same measurements through the tunnel with one setting changed at a time (Nginx
  upstream keepalive off or 64; the tunnel's cipher; compression on), and the cipher choice again with
  the Pi's tunnel ssh denied the CPU's AES instructions (OPENSSL_ia32cap), as on a Raspberry Pi 3/4.
  During each bulk transfer through the tunnel, the CPU time of the Pi's tunnel ssh is recorded too:
  on a real Pi that, not this machine's throughput, is the limit.

Every configuration is measured in each round, round-robin, so slow drift of this shared machine hits
all of them alike; the tables give the median of the rounds. Prints the tables and writes
benchmarks/results/datapath.json. Not a test: it asserts nothing.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lab
from lab import INVENTORY

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PI = "pi1"
BULK_FILE = "/var/tmp/pitunnel-bench.bin"  # on the laptop and on the Pi
NO_AESNI = "~0x200000200000000"  # OPENSSL_ia32cap mask: clear AES-NI and PCLMULQDQ (CPUID.1:ECX bits 25 and 1)
NO_AESNI_DROPIN = "/etc/systemd/system/pitunnel@vps.service.d/50-bench-no-aesni.conf"
NGINX_UPSTREAMS = "/etc/nginx/conf.d/pitunnel.conf"
TUNNEL_CONFIG = "/etc/pitunnel/vps/ssh_config"  # the lab Pi's tunnel to its (first) VPS
TARGET_RPS_RATIO = 0.7  # through / direct requests/s, at the most connections
TARGET_P99_RATIO = 2.0  # through / direct p99 latency, at the most connections
TARGET_RPS_RATIO_ONE = 0.5  # through / direct requests/s, at one connection (issue 17)
TARGET_P99_RATIO_ONE = 10.0  # through / direct p99 latency, at one connection (issue 17)


# ---------------------------------------------------------------- wrk output (pure)
@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors (connect, read, write, timeout) plus non-2xx/3xx responses


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def duration_ms(text: str) -> float:
    """A wrk duration ("812.00us", "1.23ms", "2.01s", "1.00m") in milliseconds."""
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """requests/s, p50/p99 and errors out of `wrk --latency` output; ValueError if any is missing."""
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)\s*$", output, re.M)
    total = re.search(r"^\s*(\d+) requests in ", output, re.M)
    p50 = re.search(r"^\s+50(?:\.000)?%\s+(\S+)\s*$", output, re.M)
    p99 = re.search(r"^\s+99(?:\.000)?%\s+(\S+)\s*$", output, re.M)
    if not (rps and total and p50 and p99):
        missing = [n for n, m in (("Requests/sec", rps), ("requests in", total), ("50%", p50), ("99%", p99)) if not m]
        raise ValueError(f"wrk output lacks {', '.join(missing)} (was --latency given?): {output.strip()[-300:]!r}")
    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return WrkResult(rps=float(rps.group(1)), p50_ms=duration_ms(p50.group(1)), p99_ms=duration_ms(p99.group(1)),
                     requests=int(total.group(1)), errors=errors)


def median_result(results: Sequence[WrkResult]) -> WrkResult:
    """Each figure's median over the rounds (errors: their sum)."""
    if not results:
        raise ValueError("no wrk results to summarise")
    return WrkResult(rps=statistics.median(r.rps for r in results),
                     p50_ms=statistics.median(r.p50_ms for r in results),
                     p99_ms=statistics.median(r.p99_ms for r in results),
                     requests=sum(r.requests for r in results), errors=sum(r.errors for r in results))


# ---------------------------------------------------------------- the tunnel's ssh_config (pure)
def tunnel_config(original: str, *, cipher: str | None, compression: bool) -> str:
    """The Pi's tunnel ssh_config with its Ciphers line set to `cipher` (kept as is when None) and
    Compression set; every other line kept. Options go under the single Host entry."""
    lines = original.splitlines()
    out: list[str] = []
    for line in lines:
        word = line.split()[0].lower() if line.split() else ""
        if word == "ciphers" and cipher is not None:
            continue
        if word == "compression":
            continue
        out.append(line)
    if cipher is not None:
        out.append(f"    Ciphers {cipher}")
    out.append(f"    Compression {'yes' if compression else 'no'}")
    return "\n".join(out) + "\n"


def upstream_config(original: str, keepalive: int | None) -> str:
    """Nginx's upstreams file with every `keepalive N;` set to `keepalive` (removed when 0, kept when None)."""
    if keepalive is None:
        return original
    pattern = re.compile(r"^(\s*)keepalive\s+\d+;\s*$")
    out: list[str] = []
    for line in original.splitlines():
        match = pattern.match(line)
        if match and keepalive == 0:
            continue
        out.append(f"{match.group(1)}keepalive {keepalive};" if match else line)
    return "\n".join(out) + "\n"


def cpu_seconds(stats: str, ticks_per_second: int) -> float:
    """User plus system CPU time of the processes whose /proc/PID/stat lines are in `stats`."""
    total = 0
    for line in stats.splitlines():
        if ")" not in line:
            continue
        fields = line.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of the whole line
    return total / ticks_per_second


def listen_overflows(netstat: str) -> int:
    """TcpExt ListenOverflows out of /proc/net/netstat: connections dropped because a listener's accept
    queue was full (the client then retries its SYN after 1 s)."""
    lines = [l.split() for l in netstat.splitlines() if l.startswith("TcpExt:")]
    if len(lines) < 2 or "ListenOverflows" not in lines[0]:
        raise ValueError("no TcpExt ListenOverflows in /proc/net/netstat")
    return int(lines[1][lines[0].index("ListenOverflows")])


# ---------------------------------------------------------------- configurations
@dataclass(frozen=True)
class Config:
    """One way of running the path through the VPS. `cipher` None: as provisioned."""

    name: str
    setting: str  # what this row varies, for the tuning table
    keepalive: int | None = None  # Nginx's idle upstream connections per worker; 0: none; None: as provisioned
    cipher: str | None = None
    compression: bool = False
    no_aesni: bool = False
    quickack: bool = True  # the Pi's watchdog route to the VPS with quickack 1; False: watchdog stopped, route gone


AS_PROVISIONED = Config("as provisioned", "baseline (the tunnel ssh's own cipher choice)")
CHACHA = "chacha20-poly1305@openssh.com"
AES_GCM = "aes128-gcm@openssh.com"
TUNING = (
    Config("upstream keepalive off", "nginx upstream keepalive", keepalive=0),
    Config("upstream keepalive 64", "nginx upstream keepalive", keepalive=64),
    Config(f"tunnel cipher {AES_GCM}", "tunnel cipher (x86, AES-NI)", cipher=AES_GCM),
    Config(f"tunnel cipher {CHACHA}, no AES-NI", "tunnel cipher (Pi's ssh without AES instructions)",
           cipher=CHACHA, no_aesni=True),
    Config(f"tunnel cipher {AES_GCM}, no AES-NI", "tunnel cipher (Pi's ssh without AES instructions)",
           cipher=AES_GCM, no_aesni=True),
    Config("tunnel compression on", "ssh compression", compression=True),
    Config("no quickack route on the Pi", "Pi's quick ACKs to the VPS (watchdog's route)", quickack=False),
)


# ---------------------------------------------------------------- table (pure)
def _ratio(num: float, den: float) -> str:
    return f"{num / den:.2f}x" if den else "-"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def targets(doc: dict[str, object]) -> dict[str, bool]:
    """Whether the issue's targets hold (median of the rounds): at the most connections measured, and at
    one connection when that was measured (keys ending in `_one`)."""
    http: dict[str, dict[str, dict[str, float]]] = doc["http"]  # type: ignore[assignment]
    most = str(max(int(c) for c in http["direct"]))
    direct, tunnel = http["direct"][most], http["tunnel"][most]
    met = {"rps_ratio": tunnel["rps"] >= TARGET_RPS_RATIO * direct["rps"],
           "p99_ratio": tunnel["p99_ms"] <= TARGET_P99_RATIO * direct["p99_ms"]}
    if "1" in http["direct"] and most != "1":
        direct, tunnel = http["direct"]["1"], http["tunnel"]["1"]
        met |= {"rps_ratio_one": tunnel["rps"] >= TARGET_RPS_RATIO_ONE * direct["rps"],
                "p99_ratio_one": tunnel["p99_ms"] <= TARGET_P99_RATIO_ONE * direct["p99_ms"]}
    return met


def table(doc: dict[str, object]) -> str:
    """The benchmark's tables in Markdown, from the JSON document `main` writes."""
    http: dict[str, dict[str, dict[str, float]]] = doc["http"]  # type: ignore[assignment]
    bulk: dict[str, dict[str, float]] = doc["bulk"]  # type: ignore[assignment]
    tuning: list[dict[str, object]] = doc["tuning"]  # type: ignore[assignment]
    size = float(doc["bulk_mb"])  # type: ignore[arg-type]
    lines = [f"\nData path ({doc['date']}, {doc['machine']}; wrk {doc['duration_s']} s per run, "
             f"median of {doc['rounds']} rounds)", "",
             "| connections | path | requests/s | p50 ms | p99 ms | errors | rps vs direct | p99 vs direct | "
             "Pi accept-queue overflows |",
             "|---|---|---|---|---|---|---|---|---|"]
    overflows: dict[str, dict[str, int]] = doc.get("pi_listen_overflows") or {}  # type: ignore[assignment]
    for conns in sorted(http["direct"], key=int):
        d = http["direct"][conns]
        for path in ("direct", "tunnel"):
            r = http[path][conns]
            shown = "direct to the Pi" if path == "direct" else "VPS Nginx + tunnel"
            lines.append(f"| {conns} | {shown} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                         f"{int(r['errors'])} | {_ratio(r['rps'], d['rps'])} | {_ratio(r['p99_ms'], d['p99_ms'])} | "
                         f"{overflows.get(path, {}).get(conns, '-')} |")
    met = targets(doc)
    most = str(max(int(c) for c in http["direct"]))
    rps = http["tunnel"][most]["rps"] / http["direct"][most]["rps"]
    p99 = http["tunnel"][most]["p99_ms"] / http["direct"][most]["p99_ms"]
    lines += ["", f"Targets at {most} connections: requests/s {rps:.3f}x direct (>= {TARGET_RPS_RATIO}x): "
                  f"{_verdict(met['rps_ratio'])}; p99 {p99:.3f}x direct (<= {TARGET_P99_RATIO:g}x): "
                  f"{_verdict(met['p99_ratio'])}"]
    if "rps_ratio_one" in met:
        rps = http["tunnel"]["1"]["rps"] / http["direct"]["1"]["rps"]
        p99 = http["tunnel"]["1"]["p99_ms"] / http["direct"]["1"]["p99_ms"]
        lines.append(f"Targets at 1 connection: requests/s {rps:.3f}x direct (>= {TARGET_RPS_RATIO_ONE}x): "
                     f"{_verdict(met['rps_ratio_one'])}; p99 {p99:.3f}x direct (<= {TARGET_P99_RATIO_ONE:g}x): "
                     f"{_verdict(met['p99_ratio_one'])}")
    lines += ["", f"| bulk {size:g} MB over SSH | direct MB/s | through the tunnel MB/s | tunnel vs direct |",
              "|---|---|---|---|"]
    for direction in ("download", "upload"):
        d_s, t_s = bulk["direct"][direction], bulk["tunnel"][direction]
        lines.append(f"| {direction} ({'Pi to laptop' if direction == 'download' else 'laptop to Pi'}) | "
                     f"{size / d_s:.1f} | {size / t_s:.1f} | {_ratio(d_s, t_s)} |")
    least = str(min(int(c) for c in http["direct"]))
    lines += ["", f"| setting | through the VPS with | rps c={least} | p99 ms c={least} | rps c={most} | "
                  f"p99 ms c={most} | download MB/s | upload MB/s | Pi tunnel ssh CPU s down / up | "
                  f"Pi accept-queue overflows c={most} |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in tuning:
        h: dict[str, dict[str, float]] = row["http"]  # type: ignore[assignment]
        b: dict[str, float] = row["bulk"]  # type: ignore[assignment]
        cpu: dict[str, float] = row.get("tunnel_cpu_s") or {}  # type: ignore[assignment]
        shown = f"{cpu['download']:.2f} / {cpu['upload']:.2f}" if cpu else "-"
        dropped: dict[str, int] = row.get("pi_listen_overflows") or {}  # type: ignore[assignment]
        lines.append(f"| {row['setting']} | {row['name']} | {h[least]['rps']:.0f} | {h[least]['p99_ms']:.2f} | "
                     f"{h[most]['rps']:.0f} | {h[most]['p99_ms']:.2f} | {size / b['download']:.1f} | "
                     f"{size / b['upload']:.1f} | {shown} | {dropped.get(most, '-')} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- measuring (on the lab)
def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench.datapath: wrk is not installed (`bash scripts/setup.sh`, or `apt-get install wrk`)")


def run_wrk(url: str, connections: int, duration: int, threads: int, prefix: Sequence[str] = ()) -> WrkResult:
    """wrk against `url`; `prefix` runs it elsewhere (e.g. lab.netns_argv: on a lab host's network)."""
    argv = [*prefix, "wrk", "--latency", "-t", str(min(threads, connections)), "-c", str(connections),
            "-d", f"{duration}s", "--timeout", "5s", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()[-300:]}")
    return parse_wrk(done.stdout)


@dataclass(frozen=True)
class Endpoints:
    """How the laptop reaches the Pi's API and sshd, directly and through the VPS."""

    direct_url: str
    tunnel_url: str
    direct_ssh: tuple[str, ...]
    tunnel_ssh: tuple[str, ...]


def endpoints() -> Endpoints:
    from pitunnel.inventory import load_inventory

    inv = load_inventory(INVENTORY, save_allocations=False)
    pi = inv.pis[PI]
    path = pi.first_path
    vps = inv.vps_of(path)
    ssh_port = next(t.remote_port for t in path.tunnels if t.kind == "ssh" and t.public)
    http = next(t for t in path.tunnels if t.kind == "http")
    common = ("ssh", "-F", "/dev/null", "-i", str(pi.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
              "-o", f"UserKnownHostsFile={inv.settings.known_hosts}", "-o", "StrictHostKeyChecking=yes",
              "-o", "Compression=no", "-o", f"HostKeyAlias={pi.address}")
    return Endpoints(direct_url=f"http://{pi.address}:{http.local_port}/", tunnel_url=f"http://{vps.address}{http.path}",
                     direct_ssh=(*common, "-p", "22", f"{pi.user}@{pi.address}"),
                     tunnel_ssh=(*common, "-p", str(ssh_port), f"{pi.user}@{vps.address}"))


def download_seconds(ssh: Sequence[str], size: int) -> float:
    """Time to read the Pi's bulk file through `ssh` (every byte counted)."""
    start = time.monotonic()
    with subprocess.Popen([*ssh, f"cat {BULK_FILE}"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        got = 0
        while chunk := proc.stdout.read(1 << 20):
            got += len(chunk)
    seconds = time.monotonic() - start
    if proc.returncode != 0 or got != size:
        raise RuntimeError(f"download through {ssh[-1]} got {got} of {size} bytes (exit {proc.returncode})")
    return seconds


def upload_seconds(ssh: Sequence[str], size: int) -> float:
    """Time to send the laptop's bulk file to the Pi through `ssh` (the Pi counts the bytes)."""
    with open(BULK_FILE, "rb") as data:
        start = time.monotonic()
        done = subprocess.run([*ssh, "wc -c"], stdin=data, capture_output=True, text=True, timeout=600)
        seconds = time.monotonic() - start
    if done.returncode != 0 or done.stdout.strip() != str(size):
        raise RuntimeError(f"upload through {ssh[-1]}: the Pi counted {done.stdout.strip()!r} of {size} bytes "
                           f"(exit {done.returncode}: {done.stderr.strip()[-200:]})")
    return seconds


class Lab:
    """The provisioned lab, switched between configurations of the path through the VPS."""

    def __init__(self) -> None:
        self.original_config = self.sh(PI, f"cat {TUNNEL_CONFIG}")
        self.original_upstreams = self.sh("vps", f"cat {NGINX_UPSTREAMS}")
        self.current = AS_PROVISIONED

    sh = staticmethod(lab.sh)
    write = staticmethod(lab.write_file)

    def apply(self, config: Config) -> None:
        """Switch the lab to `config`, touching only what differs from the current one."""
        from lab import target, wait_recovered

        old, self.current = self.current, config
        if config.keepalive != old.keepalive:
            self.write("vps", NGINX_UPSTREAMS, upstream_config(self.original_upstreams, config.keepalive))
            self.sh("vps", "nginx -t -q && systemctl reload nginx")
            time.sleep(1)  # the old workers finish and exit
        if config.quickack != old.quickack:
            # stopping the watchdog removes its route (ExecStopPost); starting it puts the route back
            self.sh(PI, f"systemctl {'start' if config.quickack else 'stop'} pitunnel-watchdog@vps.service; sleep 1; "
                        "ip -4 -o route show proto 247")
        tunnel = (config.cipher, config.compression, config.no_aesni)
        if tunnel == (old.cipher, old.compression, old.no_aesni):
            return
        text = tunnel_config(self.original_config, cipher=config.cipher, compression=config.compression)
        if (config.cipher, config.compression) == (None, False):
            text = self.original_config
        self.write(PI, TUNNEL_CONFIG, text)
        if config.no_aesni:
            self.write(PI, NO_AESNI_DROPIN, f"[Service]\nEnvironment=OPENSSL_ia32cap={NO_AESNI}\n")
        else:
            self.sh(PI, f"rm -f {NO_AESNI_DROPIN}")
        self.sh(PI, "systemctl daemon-reload && systemctl restart pitunnel@vps.service")
        if wait_recovered(target(PI), time.monotonic(), 90) is None:
            raise RuntimeError(f"{config.name}: the tunnel did not come back within 90 s")
        print(f"  tunnel now: {self.tunnel_settings()}", flush=True)

    def tunnel_cpu(self) -> float:
        """CPU seconds the Pi's tunnel ssh has used so far (the Pi's side of the tunnel's crypto)."""
        stats = self.sh(PI, "for p in $(pgrep -u pitunnel -x ssh); do cat /proc/$p/stat; done")
        if not stats.strip():
            raise RuntimeError(f"{PI}: no tunnel ssh running")
        return cpu_seconds(stats, os.sysconf("SC_CLK_TCK"))

    def overflows(self) -> int:
        """Connections the Pi dropped so far because a listener (its API's) had a full accept queue."""
        return listen_overflows(self.sh(PI, "cat /proc/net/netstat"))

    def tunnel_settings(self) -> str:
        """The ciphers and compression the Pi's tunnel ssh offers, as ssh itself reads its config."""
        used = self.sh(PI, f"ssh -G -F {TUNNEL_CONFIG} pitunnel-vps | grep -E '^(ciphers|compression) '")
        return " ".join(used.split())


@dataclass
class Samples:
    """Every round's figures for one configuration."""

    http: dict[int, list[WrkResult]] = field(default_factory=dict)
    bulk: dict[str, list[float]] = field(default_factory=lambda: {"download": [], "upload": []})
    tunnel_cpu: dict[str, list[float]] = field(default_factory=lambda: {"download": [], "upload": []})
    overflows: dict[int, list[int]] = field(default_factory=dict)  # the Pi's ListenOverflows during each wrk run

    def summary(self) -> dict[str, object]:
        return {"http": {str(c): asdict(median_result(rs)) for c, rs in sorted(self.http.items())},
                "bulk": {d: statistics.median(s) for d, s in self.bulk.items()},
                "tunnel_cpu_s": {d: statistics.median(s) for d, s in self.tunnel_cpu.items() if s},
                "pi_listen_overflows": {str(c): sum(n) for c, n in sorted(self.overflows.items())},
                "rounds": {"http": {str(c): [asdict(r) for r in rs] for c, rs in sorted(self.http.items())},
                           "bulk": self.bulk, "tunnel_cpu_s": self.tunnel_cpu}}


def measure(samples: Samples, url: str, ssh: Sequence[str], connections: Sequence[int], duration: int,
            threads: int, size: int, label: str, lab: Lab, cpu: Callable[[], float] | None) -> None:
    for conns in connections:
        overflows_before = lab.overflows()
        result = run_wrk(url, conns, duration, threads)
        dropped = lab.overflows() - overflows_before
        samples.http.setdefault(conns, []).append(result)
        samples.overflows.setdefault(conns, []).append(dropped)
        print(f"  {label:<58} c={conns:<3} {result.rps:>8.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
              f"p99 {result.p99_ms:7.2f} ms  errors {result.errors}  Pi listen overflows {dropped}", flush=True)
    for direction, timer in (("download", download_seconds), ("upload", upload_seconds)):
        cpu_before = cpu() if cpu else 0.0
        seconds = timer(ssh, size)
        samples.bulk[direction].append(seconds)
        used = ""
        if cpu:
            samples.tunnel_cpu[direction].append(cpu() - cpu_before)
            used = f"  (Pi's tunnel ssh: {samples.tunnel_cpu[direction][-1]:.2f} CPU s)"
        print(f"  {label:<58} {direction:<8} {size / 1e6 / seconds:6.1f} MB/s{used}", flush=True)


def make_bulk_file(size: int) -> None:
    """size random bytes (so compression cannot cheat) at BULK_FILE on the laptop and on the Pi."""
    import lab

    with open(BULK_FILE, "wb") as out:
        for _ in range(size >> 20):
            out.write(os.urandom(1 << 20))
        out.write(os.urandom(size & ((1 << 20) - 1)))
    on_pi = Path(lab.record(PI).root) / BULK_FILE.lstrip("/")
    shutil.copyfile(BULK_FILE, on_pi)
    on_pi.chmod(0o644)


def machine() -> dict[str, str]:
    import lab

    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.machine())
    hosts = {h: (Path(lab.record(h).root) / "etc/debian_version").read_text().strip() for h in ("vps", PI)}
    return {"machine": f"{os.cpu_count()} cores ({cpu}, {platform.machine()}), kernel {platform.release()}",
            "lab_hosts": ", ".join(f"{h} Debian {v}" for h, v in hosts.items()),
            "openssh": Lab.sh(PI, "ssh -V 2>&1").strip(),
            "nginx": Lab.sh("vps", "nginx -v 2>&1").strip(),
            "load_before": " ".join(Path("/proc/loadavg").read_text().split()[:3])}


def rounds_of(configs: Sequence[Config], rounds: int) -> Iterator[tuple[int, Config]]:
    for n in range(1, rounds + 1):
        for config in configs:
            yield n, config


def provision_lab(release: str) -> None:
    """A fresh lab with one Pi, its VPS and Pi provisioned (both benchmarks of the data path start here)."""
    from pitunnel.taskkit import Flags, run_play
    from pitunnel.play import Play
    from pitunnel.roles.site import provision_pi as provision_pis
    from pitunnel.roles.site import provision_vps

    print("== lab up (1 Pi, fresh) and provision", flush=True)
    lab.up(pis=1, release=release, fresh=True)

    def both(play: Play) -> None:
        provision_vps(play)
        provision_pis(play)

    run_play(both, Flags(inventory=str(INVENTORY)), quiet=True)


def run(connections: Sequence[int], duration: int, rounds: int, threads: int, size_mb: int,
        tuning: bool, release: str, only: str = "") -> dict[str, object]:
    provision_lab(release)
    ends = endpoints()
    size = size_mb * 1_000_000
    make_bulk_file(size)
    state = Lab()
    info = {**machine(), "tunnel_as_provisioned": state.tunnel_settings()}
    print(f"  tunnel as provisioned: {info['tunnel_as_provisioned']}", flush=True)
    configs = [AS_PROVISIONED, *(c for c in (TUNING if tuning else ()) if only in c.name)]
    direct = Samples()
    through = {c.name: Samples() for c in configs}
    for n, config in rounds_of(configs, rounds):
        if config is AS_PROVISIONED:
            print(f"== round {n}/{rounds}", flush=True)
            state.apply(AS_PROVISIONED)
            measure(direct, ends.direct_url, ends.direct_ssh, connections, duration, threads, size,
                    "direct to the Pi", state, cpu=None)
        state.apply(config)
        measure(through[config.name], ends.tunnel_url, ends.tunnel_ssh, connections, duration, threads, size,
                f"through the VPS, {config.name}", state, cpu=state.tunnel_cpu)
    d, t = direct.summary(), through[AS_PROVISIONED.name].summary()
    return {"benchmark": "datapath", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            **info, "release": release, "duration_s": duration, "rounds": rounds, "wrk_threads": threads,
            "connections": list(connections), "bulk_mb": size / 1e6,
            "urls": {"direct": ends.direct_url, "tunnel": ends.tunnel_url},
            "http": {"direct": d["http"], "tunnel": t["http"]},
            "bulk": {"direct": d["bulk"], "tunnel": t["bulk"]},
            "pi_listen_overflows": {"direct": d["pi_listen_overflows"], "tunnel": t["pi_listen_overflows"]},
            "tuning": [{"name": c.name, "setting": c.setting, **asdict(c), **through[c.name].summary()}
                       for c in configs],
            "raw": {"direct": d["rounds"], "tunnel": t["rounds"]}}


def main(connections: Sequence[int] = (1, 32), duration: int = 10, rounds: int = 3, threads: int = 2,
         size_mb: int = 100, tuning: bool = True, release: str = "bookworm", only: str = "") -> dict[str, object]:
    import lab

    require_wrk()
    if not connections or min(connections) < 1:
        raise SystemExit("bench.datapath: connections must be positive integers, e.g. 1,32")
    try:
        doc = run(connections, duration, rounds, threads, size_mb, tuning, release, only)
    finally:
        Path(BULK_FILE).unlink(missing_ok=True)
        lab.down()
    doc["targets_met"] = targets(doc)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "datapath.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(table(doc))
    print(f"\nwritten: {(RESULTS / 'datapath.json').relative_to(ROOT)}")
    return doc
