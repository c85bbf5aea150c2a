"""The benchmarks' tasks: `invoke bench.lab`, `bench.recovery`, `bench.provision`, `bench.fleet`, `bench.datapath`,
`bench.hops`, `bench.keepalive`, `bench.deadvps`, `bench.inventory`, `bench.capacity`."""

from __future__ import annotations

from invoke import Collection, Context, Exit, task


@task(help={"pis": "Pis in the lab (default 2)", "release": "bookworm or trixie",
            "warm_runs": "how many warm runs (default 3)", "cold": "also time a cold run (default on)"})
def bench_lab(c: Context, pis: int = 2, release: str = "bookworm", warm_runs: int = 3, cold: bool = True) -> None:
    """Time lab.up cold (no cached root filesystem) and warm; prints a table, writes JSON."""
    from benchmarks.lab_up import main

    main(pis=pis, release=release, warm_runs=warm_runs, cold=cold)


@task(help={"faults": "comma-separated faults (default: all but link-down-10min)", "runs": "runs per fault (default 3)",
            "timeout": "seconds before a run counts as not recovered (default 60)",
            "setups": "comma-separated: pitunnel,seed,sidedoor (default all three), pitunnel-2vps (a second VPS)",
            "release": "Debian release of the lab hosts"})
def bench_recovery(c: Context, faults: str = "", runs: int = 3, timeout: float = 60, setups: str = "",
                   release: str = "bookworm") -> None:
    """Recovery time per fault for pitunnel, the seed's settings and sidedoor, side by side."""
    from benchmarks.recovery import main
    from lab import FAULTS

    chosen = [f for f in faults.split(",") if f] or [n for n in FAULTS if n != "link-down-10min"]
    main(chosen, runs=runs, timeout=timeout, setups=[s for s in setups.split(",") if s] or None, release=release)


@task(help={"pis": "Pis in the lab (default 2)", "release": "Debian release of the lab hosts: bookworm or trixie",
            "cold_runs": "cold runs per side, each on fresh lab hosts (default 1)",
            "reruns": "no-change reruns per side (default 3)"})
def bench_provision(c: Context, pis: int = 2, release: str = "bookworm", cold_runs: int = 1, reruns: int = 3) -> None:
    """pitunnel against an equivalent Ansible playbook: cold runs and no-change reruns; prints a table, writes JSON."""
    from benchmarks.provision import main

    main(pis=pis, release=release, cold_runs=cold_runs, reruns=reruns)


@task(help={"sizes": "comma-separated fleet sizes in Pis (default 1,5,10,20)",
            "release": "Debian release of the lab hosts: bookworm or trixie",
            "isolation": "also run the isolation check: one Pi unreachable during provisioning (default on)",
            "down": "the Pi made unreachable in the isolation run (default: the middle one of the largest size)",
            "preinstalled": "also run every size with autossh installed on the Pis before the clock starts",
            "ansible": "also run the equivalent Ansible playbook at every size, and in the isolation run (default on; "
                       "needs `pip install -e '.[bench]'` and sshpass)"})
def bench_fleet(c: Context, sizes: str = "1,5,10,20", release: str = "bookworm", isolation: bool = True,
                down: str = "", preinstalled: bool = False, ansible: bool = True) -> None:
    """Provision fleets of 1..20 Pis with pitunnel and with Ansible: wall time, laptop CPU and memory per size; isolation."""
    from benchmarks.fleet import main, parse_sizes

    try:
        chosen = parse_sizes(sizes)
    except ValueError as exc:
        raise Exit(f"bench.fleet: {exc}", code=2) from None
    main(chosen, release=release, isolation=isolation, down=down, preinstalled=preinstalled, ansible=ansible)


@task(help={"connections": "comma-separated wrk connection counts (default 1,32)",
            "duration": "seconds of each wrk run (default 10)",
            "rounds": "rounds; every configuration is measured once per round, medians reported (default 3)",
            "threads": "wrk threads, at most one per connection (default 2)",
            "size_mb": "bulk transfer size over SSH, in MB (default 100)",
            "tuning": "also measure each tuning setting changed on its own (default on; --no-tuning skips)",
            "only": "measure only the tuning rows whose name contains this text (e.g. quickack)",
            "release": "Debian release of the lab hosts: bookworm or trixie"})
def bench_datapath(c: Context, connections: str = "1,32", duration: int = 10, rounds: int = 3, threads: int = 2,
                   size_mb: int = 100, tuning: bool = True, release: str = "bookworm", only: str = "") -> None:
    """HTTP (wrk) and bulk SSH to the Pi, direct vs through VPS Nginx and the tunnel; tuning effects."""
    from benchmarks.datapath import main

    try:
        counts = [int(n) for n in connections.split(",") if n.strip()]
    except ValueError:
        raise Exit(f"bench.datapath: --connections wants integers like 1,32, not {connections!r}", code=2) from None
    main(connections=counts, duration=duration, rounds=rounds, threads=threads, size_mb=size_mb, tuning=tuning,
         release=release, only=only)


@task(help={"duration": "seconds of each wrk run (default 5)",
            "rounds": "rounds; every point is measured once per round, medians reported (default 3)",
            "busy": "also measure every point with the machine's cores kept busy by nice-19 spinners (default on)",
            "release": "Debian release of the lab hosts: bookworm or trixie"})
def bench_hops(c: Context, duration: int = 5, rounds: int = 3, busy: bool = True, release: str = "bookworm") -> None:
    """One connection through the VPS taken apart: wrk -c 1 at each point of the path, each hop's cost."""
    from benchmarks.hops import main

    main(duration=duration, rounds=rounds, release=release, busy=busy)


@task(help={"profiles": "comma-separated keepalive profiles: metered, default, fast, or PIxN/VPSxN such as "
                        "10x3/5x2 (default: 10x3/5x2,default,fast,metered)",
            "runs": "nat-forgets runs per profile (default 3)", "idle": "seconds of idle traffic counted (default 120)",
            "timeout": "seconds before a nat-forgets run counts as not recovered (default 150)",
            "release": "Debian release of the lab hosts"})
def bench_keepalive(c: Context, profiles: str = "10x3/5x2,default,fast,metered", runs: int = 3, idle: float = 120,
                    timeout: float = 150, release: str = "bookworm") -> None:
    """nat-forgets recovery against keepalive traffic (bytes per hour, MB per month) per keepalive profile."""
    from benchmarks.keepalive import main

    main([p for p in profiles.split(",") if p], runs=runs, idle=idle, timeout=timeout, release=release)


@task(help={"sizes": "comma-separated fleet sizes in Pis (default 1,20)",
            "connect_timeout": "the inventory's connect_timeout in seconds (default 5)",
            "runs": "runs per task and size (default 1)"})
def bench_deadvps(c: Context, sizes: str = "1,20", connect_timeout: float = 5, runs: int = 1) -> None:
    """A dead VPS: wall time of status and provision-pi with the VPS and every Pi dropping packets (needs root)."""
    from benchmarks.deadvps import main
    from benchmarks.fleet import parse_sizes

    try:
        chosen = parse_sizes(sizes)
    except ValueError as exc:
        raise Exit(f"bench.deadvps: {exc}", code=2) from None
    main(chosen, connect_timeout=connect_timeout, runs=runs)


@task(help={"pis": "comma-separated fleet sizes in Pis (default 1000)", "runs": "runs per figure, the median is kept (default 3)",
            "profile": "also print cProfile's top functions of one cold load and render"})
def bench_inventory(c: Context, pis: str = "1000", runs: int = 3, profile: bool = False) -> None:
    """Load, check and render (Nginx, ports file) the inventory of a large fleet on the laptop; no host needed."""
    from benchmarks.fleet import parse_sizes
    from benchmarks.inventory_scale import main

    try:
        chosen = parse_sizes(pis)
    except ValueError as exc:
        raise Exit(f"bench.inventory: {exc}", code=2) from None
    main(chosen, runs=runs, profile=profile)


@task(help={"pis": "comma-separated fleet sizes in Pis: the lab's pi1 and N - 1 simulated Pis (default 10,100,1000; "
                   "at most 1999)",
            "release": "Debian release of the lab hosts: bookworm or trixie",
            "off": "seconds the VPS stays without power in the power cut (default 20)",
            "window": "seconds over which the reaper's CPU is measured at steady state (default 60)",
            "timeout": "seconds to wait for every tunnel to listen, at start and after the power cut (default 300)",
            "poll": "AUTOSSH_POLL of the simulated Pis: autossh's longest back-off in seconds (default 10, the "
                    "Pi role's)",
            "variants": "at the largest N, the cost per tunnel of each variant (benchmarks/capacity_variants.py) "
                        "with 100 sessions (default on; --no-variants skips them)",
            "maxstartups": "the VPS sshd's MaxStartups for the run, e.g. 100:30:1000 (default: sshd's own, 10:30:100)",
            "sims_on": "CPUs the simulated Pis run on (a taskset list, e.g. 1), for a machine with cores to spare; "
                       "default any: on 2 cores, one CPU is too few for 1,000 clients' handshakes (docs/performance.md)"})
def bench_capacity(c: Context, pis: str = "10,100,1000", release: str = "bookworm", off: float = 20,
                   window: float = 60, timeout: float = 300, poll: int = 10, variants: bool = True,
                   maxstartups: str = "", sims_on: str = "any") -> None:
    """One lab VPS and N Pis' tunnels (real OpenSSH clients from pi1): memory per tunnel, a power cut's
    reconnect storm, provision-vps, status, verify and the reaper at N; writes benchmarks/results/capacity.json."""
    from benchmarks.capacity import main
    from benchmarks.fleet import parse_sizes

    try:
        chosen = parse_sizes(pis)
    except ValueError as exc:
        raise Exit(f"bench.capacity: {exc}", code=2) from None
    main(chosen, release=release, off=off, window=window, timeout=timeout, poll=poll, variants=variants,
         maxstartups=maxstartups, cpus="" if sims_on == "any" else sims_on)


ns = Collection("bench")
ns.add_task(bench_lab, "lab")
ns.add_task(bench_recovery, "recovery")
ns.add_task(bench_provision, "provision")
ns.add_task(bench_fleet, "fleet")
ns.add_task(bench_datapath, "datapath")
ns.add_task(bench_hops, "hops")
ns.add_task(bench_keepalive, "keepalive")
ns.add_task(bench_deadvps, "deadvps")
ns.add_task(bench_inventory, "inventory")
ns.add_task(bench_capacity, "capacity")
