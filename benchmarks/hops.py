"""Benchmark: where one connection's time goes on the path through the VPS (issue 17, part 1).

`bench.datapath` compares one connection through the VPS with one straight to the Pi. This one takes the
path apart: `wrk -c 1` at each point of it, each from the host that would send there, so each hop's cost
is the difference of two per-request times (1 / requests per second):

    api        on the Pi, to its API over loopback          the API alone
    direct     laptop to the Pi's API                       ... plus the home network (bench.datapath's baseline)
    tunnel     on the VPS, to the tunnel's forward port     ... plus sshd, the tunnel and the Pi's ssh
    nginx      on the VPS, to Nginx's own `return 200`      Nginx alone, no upstream
    via-nginx  on the VPS, through Nginx and the tunnel     ... plus Nginx proxying
    full       laptop, through Nginx and the tunnel         what bench.datapath measures through the VPS

Every point is measured twice per round: with the machine's cores idle between requests, and with them
kept busy by one nice-19 spinner per core (so a waking process finds its core awake). The difference is
what waking idle cores costs; in a VM it is large. Then the full path again with each Nginx setting that
could cut its per-request work (`access_log off`, `worker_processes 1`), put back after each.

Rounds are interleaved, medians reported. Prints the tables and writes benchmarks/results/hops.json.
Not a test: it asserts nothing. The lab VPS's Nginx gets a `location = /pitunnel-bench-static` for the
run; it and every variant are undone at the end.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import lab
from benchmarks import datapath
from benchmarks.datapath import INVENTORY, PI, RESULTS, ROOT, TARGET_RPS_RATIO_ONE, machine, require_wrk

SITE = "/etc/nginx/sites-enabled/pitunnel.conf"
NGINX_MAIN = "/etc/nginx/nginx.conf"
STATIC = "/pitunnel-bench-static"
MODES = ("idle", "busy")


# ---------------------------------------------------------------- the path (pure)
@dataclass(frozen=True)
class Point:
    name: str
    host: str  # where wrk runs: "laptop" (this machine) or a lab host's network
    url: str
    what: str
    after: str = ""  # the point this one adds a hop to ("" for none)


def points(*, pi: str, pi_address: str, api_port: int, vps_address: str, forward_port: int, path: str) -> list[Point]:
    """The points of the path a request to `pi`'s HTTP tunnel takes, in order."""
    return [
        Point("api", pi, f"http://127.0.0.1:{api_port}/", "on the Pi, to its API over loopback"),
        Point("direct", "laptop", f"http://{pi_address}:{api_port}/", "laptop to the Pi's API (home network)", "api"),
        Point("tunnel", "vps", f"http://127.0.0.1:{forward_port}/",
              "on the VPS, to the forward port (sshd, tunnel, Pi's ssh)", "api"),
        Point("nginx", "vps", f"http://{vps_address}{STATIC}", "on the VPS, Nginx's own return 200"),
        Point("via-nginx", "vps", f"http://{vps_address}{path}", "on the VPS, through Nginx and the tunnel", "tunnel"),
        Point("full", "laptop", f"http://{vps_address}{path}", "laptop, through Nginx and the tunnel", "via-nginx"),
    ]


def with_static(site: str) -> str:
    """The Nginx site with a fixed-answer location for the "nginx" point, before its catch-all."""
    marker = "    location / {"
    if marker not in site:
        raise ValueError(f"no `location / {{` in {SITE}: cannot add {STATIC}")
    return site.replace(marker, f'    location = {STATIC} {{ return 200 "ok\\n"; }}\n{marker}', 1)


def variants(site: str, main: str) -> dict[str, tuple[str, str]]:
    """Nginx settings that could cut its per-request work: name -> (site, nginx.conf)."""
    if "server_tokens off;" not in site or "worker_processes auto;" not in main:
        raise ValueError("the VPS's Nginx files are not as pitunnel and Debian write them")
    return {"access_log off": (site.replace("server_tokens off;", "server_tokens off;\n    access_log off;", 1), main),
            "worker_processes 1": (site, main.replace("worker_processes auto;", "worker_processes 1;", 1))}


def per_request_us(rps: float) -> float:
    return 1e6 / rps if rps else float("inf")


def medians(doc: dict[str, object]) -> dict[str, dict[str, float]]:
    """Median requests/s of each point in each mode."""
    raw: dict[str, dict[str, list[float]]] = doc["points"]  # type: ignore[assignment]
    return {name: {mode: statistics.median(rps) for mode, rps in modes.items() if rps} for name, modes in raw.items()}


def table(doc: dict[str, object]) -> str:
    """The benchmark's tables in Markdown, from the JSON document `main` writes."""
    order: list[dict[str, str]] = doc["order"]  # type: ignore[assignment]
    med = medians(doc)
    lines = [f"\nOne connection, hop by hop ({doc['date']}, {doc['machine']}; wrk -c 1, {doc['duration_s']} s per run, "
             f"median of {doc['rounds']} rounds)", "",
             "| point | wrk runs | requests/s | us per request | this hop adds, us | cores kept busy: requests/s | "
             "us per request | this hop adds, us |",
             "|---|---|---|---|---|---|---|---|"]
    for p in order:
        cells = [p["name"], p["what"]]
        for mode in MODES:
            rps = med[p["name"]].get(mode)
            if rps is None:
                cells += ["-", "-", "-"]
                continue
            us = per_request_us(rps)
            added = (f"{us - per_request_us(med[p['after']][mode]):+.0f}"
                     if p["after"] and mode in med[p["after"]] else "")
            cells += [f"{rps:.0f}", f"{us:.0f}", added]
        lines.append("| " + " | ".join(cells) + " |")
    full, direct = med["full"]["idle"], med["direct"]["idle"]
    ratio = full / direct
    lines += ["", f"Through the VPS at one connection: {ratio:.3f}x direct's requests/s "
                  f"(>= {TARGET_RPS_RATIO_ONE}x: {'met' if ratio >= TARGET_RPS_RATIO_ONE else 'NOT met'}); "
                  f"{per_request_us(full) - per_request_us(direct):.0f} us per request more than direct"]
    if "busy" in med["full"] and "busy" in med["direct"]:
        lines.append(f"With the cores kept busy: {med['full']['busy'] / med['direct']['busy']:.3f}x")
    tried: dict[str, list[float]] = doc["variants"]  # type: ignore[assignment]
    if tried:
        base = full
        lines += ["", "| Nginx on the VPS | full path requests/s | vs as provisioned |", "|---|---|---|",
                  f"| as provisioned | {base:.0f} | 1.00x |"]
        for name, runs in tried.items():
            lines.append(f"| {name} | {statistics.median(runs):.0f} | {statistics.median(runs) / base:.2f}x |")
    return "\n".join(lines)


# ---------------------------------------------------------------- measuring (on the lab)
def run_wrk(prefix: Sequence[str], url: str, duration: int) -> float:
    """Requests/s of one connection to `url`; any error fails the run (a hop's cost needs every request)."""
    result = datapath.run_wrk(url, 1, duration, 1, prefix)
    if result.errors:
        raise RuntimeError(f"{url}: {result.errors} errors in {result.requests} requests")
    return result.rps


@contextmanager
def busy_cores() -> Iterator[None]:
    """One nice-19 spinner per core for the block; ended by PID."""
    spinners = [subprocess.Popen(["nice", "-n", "19", "sh", "-c", "while :; do :; done"])
                for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


class Nginx:
    """The lab VPS's Nginx: switched between its files as provisioned and a variant; put back on exit."""

    def __init__(self) -> None:
        self.site = lab.sh("vps", f"cat {SITE}")
        self.main = lab.sh("vps", f"cat {NGINX_MAIN}")

    def use(self, site: str, main: str) -> None:
        lab.write_file("vps", SITE, site)
        lab.write_file("vps", NGINX_MAIN, main)
        lab.sh("vps", "nginx -t -q && systemctl reload nginx")
        time.sleep(1)  # the old workers finish and exit

    def restore(self) -> None:
        self.use(self.site, self.main)


def lab_path() -> list[Point]:
    """The points of the provisioned lab Pi's HTTP tunnel, from the lab's inventory."""
    from pitunnel.inventory import load_inventory

    inv = load_inventory(INVENTORY, save_allocations=False)
    pi = inv.pis[PI]
    path = pi.first_path
    vps = inv.vps_of(path)
    http = next(t for t in path.tunnels if t.kind == "http" and t.path)
    assert http.path is not None
    return points(pi=PI, pi_address=pi.address, api_port=http.local_port, vps_address=vps.address,
                  forward_port=http.remote_port, path=http.path)


def run(duration: int, rounds: int, release: str, busy: bool) -> dict[str, object]:
    datapath.provision_lab(release)
    path = lab_path()
    prefixes = {p.host: [] if p.host == "laptop" else lab.netns_argv(p.host) for p in path}
    nginx = Nginx()
    tried = variants(nginx.site, nginx.main)
    measured: dict[str, dict[str, list[float]]] = {p.name: {m: [] for m in MODES} for p in path}
    results: dict[str, list[float]] = {name: [] for name in tried}
    full = next(p for p in path if p.name == "full")
    try:
        for n in range(1, rounds + 1):
            print(f"== round {n}/{rounds}", flush=True)
            nginx.use(with_static(nginx.site), nginx.main)
            for mode in MODES if busy else ("idle",):
                cores: AbstractContextManager[None] = busy_cores() if mode == "busy" else nullcontext()
                with cores:
                    for p in path:
                        rps = run_wrk(prefixes[p.host], p.url, duration)
                        measured[p.name][mode].append(rps)
                        print(f"  {mode:4} {p.name:10} {p.what:58} {rps:8.0f} req/s {per_request_us(rps):6.0f} us",
                              flush=True)
            for name, (site, main) in tried.items():
                nginx.use(site, main)
                rps = run_wrk(prefixes[full.host], full.url, duration)
                results[name].append(rps)
                print(f"  idle full       Nginx with {name:47} {rps:8.0f} req/s {per_request_us(rps):6.0f} us",
                      flush=True)
    finally:
        nginx.restore()
    return {"benchmark": "hops", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **machine(),
            "release": release, "duration_s": duration, "rounds": rounds,
            "order": [{"name": p.name, "what": p.what, "after": p.after, "host": p.host, "url": p.url} for p in path],
            "points": measured, "variants": results}


def main(duration: int = 5, rounds: int = 3, release: str = "bookworm", busy: bool = True) -> dict[str, object]:
    require_wrk()
    try:
        doc = run(duration, rounds, release, busy)
    finally:
        lab.down()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "hops.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(doc))
    print(f"\nwritten: {out.relative_to(ROOT)}")
    return doc


if __name__ == "__main__":
    main()
