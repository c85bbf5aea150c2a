"""Unit tests for benchmarks/provision.py and benchmarks/fleet.py: recap parsing, the child runner,
and the tables (pure: no lab)."""

from __future__ import annotations

import sys

import pytest

from benchmarks import fleet, provision

PITUNNEL_OUT = """\
changed      vps        packages nginx - install nginx
ok           pi1        tunnel listening on the VPS - 0.0.0.0:12346, 127.0.0.1:20000 (after 1.2s)
\x1b[31mfailed      \x1b[0m pi3        tunnel listening on the VPS - not listening after 45s

PLAY RECAP ************************************************************
\x1b[33mvps                       \x1b[0m : ok=24   changed=0    unreachable=0    failed=0    skipped=0    round_trips=4
pi1                        : ok=15   changed=2    unreachable=0    failed=0    skipped=0    round_trips=2
pi2                        : ok=0    changed=0    unreachable=1    failed=0    skipped=0    round_trips=0
pi3                        : ok=3    changed=0    unreachable=0    failed=1    skipped=0    round_trips=3
"""

ANSIBLE_OUT = """\
TASK [tunnel listening on the VPS] *********************************************
ok: [pi1 -> vps(198.18.0.10)]

PLAY RECAP *********************************************************************
pi1                        : ok=21   changed=0    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
vps                        : ok=24   changed=1    unreachable=0    failed=0    skipped=2    rescued=0    ignored=0
"""


def test_parse_pitunnel_recap_with_colours() -> None:
    recap = provision.parse_recap(PITUNNEL_OUT)
    assert list(recap) == ["vps", "pi1", "pi2", "pi3"]
    assert recap["vps"]["round_trips"] == 4 and recap["vps"]["ok"] == 24
    assert provision.total(recap, "changed") == 2
    assert provision.bad_hosts(recap) == ["pi2", "pi3"]


def test_parse_ansible_recap() -> None:
    recap = provision.parse_recap(ANSIBLE_OUT)
    assert recap["vps"] == {"ok": 24, "changed": 1, "unreachable": 0, "failed": 0, "skipped": 2,
                            "rescued": 0, "ignored": 0}
    assert "round_trips" not in recap["pi1"]


def test_parse_recap_without_recap_is_empty() -> None:
    assert provision.parse_recap("Traceback (most recent call last):\n  boom") == {}


def test_only_the_last_recap_counts() -> None:
    twice = PITUNNEL_OUT.replace("round_trips=4", "round_trips=9") + "\n" + PITUNNEL_OUT
    assert provision.parse_recap(twice)["vps"]["round_trips"] == 4


def test_run_child_times_and_measures_memory() -> None:
    code = "import sys; b = bytearray(64 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('hi'); sys.exit(3)"
    run = provision.run_child([sys.executable, "-c", code])
    assert run.rc == 3
    assert run.output.strip() == "hi"
    assert run.max_rss_kib > 64 * 1024
    assert 0 < run.cpu_s <= run.seconds * 4
    assert 0 < run.seconds < 30


def doc(cold: tuple[float, float], rerun: tuple[float, float], trips: dict[str, int]) -> dict[str, object]:
    def side(c: float, r: float, t: dict[str, int]) -> dict[str, object]:
        return {"cold_s": [c], "rerun_s": [r, r + 1, r - 0.5], "cold_changed": [30], "rerun_changed": [0, 0, 0],
                "cold_rss_kib": [50_000], "rerun_rss_kib": [40_000], "rerun_round_trips": t,
                "cold_round_trips": t, "verified": ["pitunnel verify: passed"]}
    return {"pis": 2, "lab_release": "bookworm 12.12", "cold_runs": 1, "reruns": 3,
            "pitunnel": side(*cold[:1], rerun[0], trips), "ansible": side(cold[1], rerun[1], {"vps": 24})}


def test_summary_ratios_and_verdicts() -> None:
    s = provision.summary(doc((10.0, 40.0), (1.0, 10.0), {"vps": 2, "pi1": 2}))
    assert s["cold_ratio"] == pytest.approx(0.25)
    assert s["rerun_ratio"] == pytest.approx(0.1)  # medians: 1.0 / 10.0
    assert s["targets"] == {"cold_ratio<=0.5": "met", "rerun_ratio<=0.25": "met", "rerun_round_trips<=3": "met"}
    worse = provision.summary(doc((30.0, 40.0), (5.0, 10.0), {"vps": 4, "pi1": 2}))
    assert worse["targets"] == {"cold_ratio<=0.5": "NOT met", "rerun_ratio<=0.25": "NOT met",
                                "rerun_round_trips<=3": "NOT met"}


def test_table_says_when_round_trips_exceed_the_target() -> None:
    text = provision.table(doc((10.0, 40.0), (1.0, 10.0), {"vps": 4, "pi1": 2}))
    assert "| cold run, wall s | 10.0 | 40.0 | 0.25 | <= 0.5 (met) |" in text
    assert "vps 4, pi1 2" in text
    assert "TARGET MISSED" in text and "on vps" in text
    assert "TARGET MISSED" not in provision.table(doc((10.0, 40.0), (1.0, 10.0), {"vps": 3, "pi1": 2}))


def test_parse_sizes() -> None:
    assert fleet.parse_sizes("20,1,5,10,5") == [1, 5, 10, 20]
    with pytest.raises(ValueError):
        fleet.parse_sizes("0,5")
    with pytest.raises(ValueError):
        fleet.parse_sizes("")


def test_listening_pis_reads_only_finished_ones() -> None:
    assert fleet.listening_pis(PITUNNEL_OUT) == ["pi1"]


def fleet_doc(seconds: list[float], named: bool = True) -> dict[str, object]:
    sizes = [{"pis": n, "seconds": s, "max_rss_kib": 60_000 + n * 1000, "rc": 0, "changed": 10 * n,
              "bad_hosts": [], "reachable": n, "cpu_busy": 0.5, "laptop_cpu_s": 1.5 * n, "pis_cpu_s": 2.0 * n,
              "vps_cpu_s": 4.0} for n, s in zip([1, 5, 10, 20], seconds)]
    iso = {"pis": 20, "down": "pi10", "seconds": 25.0, "rc": 1, "recap_unreachable": ["pi10"] if named else [],
           "recap_failed": [], "finished": [f"pi{i}" for i in range(1, 21) if i != 10], "reachable": 19,
           "named_in_recap": named, "others_finished": True, "recap": []}
    return {"lab_release": "bookworm 12.12", "sizes": sizes, "isolation": iso}


def test_fleet_table_ratio_and_target() -> None:
    text = fleet.table(fleet_doc([10.0, 12.0, 15.0, 20.0]))
    # the Pis' CPU with its share per Pi, the VPS's, and the floor: (40 + 4 + 30) s over the cores
    floor = (40.0 + 4.0 + 30.0) / fleet.CORES
    assert f"| 20 | 20.0 | 2.00 | 78 | 30.0 | 40.0 (2.00) | 4.0 | {floor:.1f} | 50% |" in text
    assert "2.00x, met" in text
    assert "19/19" in text and "unreachable pi10" in text
    assert "NOT met" not in text
    slow = fleet.table(fleet_doc([10.0, 12.0, 15.0, 30.0], named=False))
    assert "3.00x, NOT met" in slow
    assert "recap names the one): NOT met" in slow


def test_fleet_table_keeps_preinstalled_runs_apart() -> None:
    doc = fleet_doc([10.0, 12.0, 15.0, 40.0])
    warm = [dict(row, seconds=row["seconds"] / 4, preinstalled=True) for row in doc["sizes"]]  # type: ignore[attr-defined]
    text = fleet.table({**doc, "sizes": [*doc["sizes"], *warm]})  # type: ignore[misc]
    fresh, _, rest = text.partition("With autossh already on the Pis")
    assert "4.00x, NOT met" in fresh
    assert "| 20 | 10.0 | 4.00 |" in rest and "4.00x, NOT met" in rest  # each against its own 1 Pi


def test_process_ticks_reads_past_a_name_with_spaces_and_parens() -> None:
    from lab.machine import process_ticks

    stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 11 2 20 0 1 0 5 0 0"
    assert process_ticks(stat) == 7 + 3 + 11 + 2


def test_cpu_busy_share_from_proc_stat() -> None:
    before = fleet.cpu_jiffies("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n")
    after = fleet.cpu_jiffies("cpu  400 0 150 900 50 0 0 0 0 0\n")
    assert before == (150, 1000)
    assert fleet.busy_share(before, after) == pytest.approx(400 / 500)
    assert fleet.busy_share(after, after) == 0.0


def test_fleet_table_sets_pitunnel_against_ansible_at_each_size() -> None:
    doc = fleet_doc([10.0, 12.0, 15.0, 20.0])
    theirs = [dict(row, tool="ansible", seconds=row["seconds"] * 3, laptop_cpu_s=row["laptop_cpu_s"] * 4,  # type: ignore[index]
                   tree_pss_kib=200 * 1024 * row["pis"], tree_processes=2 * row["pis"]) for row in doc["sizes"]]  # type: ignore[attr-defined, index]
    mine = [dict(row, tree_pss_kib=50 * 1024) for row in doc["sizes"]]  # type: ignore[attr-defined]
    text = fleet.table({**doc, "sizes": [*mine, *theirs]})
    floor = (40.0 + 4.0 + 30.0) / fleet.CORES
    assert f"| 20 | 20.0 | 60.0 | 0.33 | {floor:.1f} | {20 / floor:.2f} | 1.50 / 6.00 | 2.5 / 200.0 | 40 | 0 / 0 |" in text
    assert "pitunnel <= 0.5x Ansible's wall time: 0.33x, met" in text
    assert f"its CPU floor: {20 / floor:.2f}x, {'met' if 20 / floor <= 1.2 else 'NOT met'}" in text
    # the pitunnel-only tables do not take Ansible's rows as their own
    assert "| 20 | 60.0 |" not in text.partition("Against Ansible")[0]
    slow = fleet.table({**doc, "sizes": [*mine, *[dict(r, seconds=30.0) for r in theirs]]})
    assert "0.67x, NOT met" in slow


def test_fleet_table_reads_isolation_runs_of_both_tools() -> None:
    doc = fleet_doc([10.0, 12.0, 15.0, 20.0])
    iso = doc["isolation"]
    text = fleet.table({**doc, "isolation": [iso, dict(iso, tool="ansible", named_in_recap=False)]})  # type: ignore[arg-type]
    assert "during `invoke provision`" in text and "during the Ansible playbook" in text
    assert text.count("recap names the one): met") == 1 and "recap names the one): NOT met" in text


def test_tree_sampler_counts_forks_and_the_orphans_a_run_leaves() -> None:
    """A run that leaves a process behind (as ssh's ControlPersist master does) is measured with it, and
    the orphan is ended and reaped afterwards, its CPU time added to the run's."""
    from benchmarks.treemem import my_children

    before = my_children()  # the session's own (a lab test's containers, say): not the run's
    hold = "import time; x = bytearray(40_000_000); x[::4096] = b'1' * len(x[::4096]); time.sleep(30)"
    run = provision.run_child(["bash", "-c", f"(python3 -c \"{hold}\" &); sleep 1.5"], sample_tree=True)
    assert run.tree is not None and run.tree.processes >= 2
    assert run.tree.pss_kib > 35_000  # the orphan's 40 MB, though its parent had exited
    assert my_children() == before  # ended and reaped: nothing of the run is left


def test_tree_parsing_of_proc_files() -> None:
    from benchmarks import treemem

    assert treemem.parent_of("12 (a (b) c) S 7 12 12 0") == 7
    assert treemem.rollup("Rss:    100 kB\nPss:     40 kB\nPss_Anon: 3 kB\n") == (40, 100)
    assert sorted(treemem.descendants(1, {2: 1, 3: 2, 4: 9, 5: 3})) == [1, 2, 3, 5]
