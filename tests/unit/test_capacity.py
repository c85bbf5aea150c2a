"""How many Pis a VPS's memory carries, and provision-vps's warning when the inventory asks for more (issue 27)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitunnel.roles.site import provision_vps
from pitunnel.roles.vps.capacity import (BASE_KB, SSHD_KB_PER_SESSION, Memory, carried, over_capacity, parse_memory,
                                         sessions_on)
from tests.unit.fake_hosts import FakeHost, lines, load, play_on

GIB = 1024 * 1024  # kB


def test_memory_is_read_from_meminfo_and_the_cgroup_limit() -> None:
    assert parse_memory("MemTotal:        1004584 kB\n") == Memory(1004584, None)
    assert parse_memory("MemTotal: 24730000 kB\nmemory.max 268435456\n") == Memory(24730000, 262144)
    assert parse_memory("MemTotal: 24730000 kB\nmemory.max max\n") == Memory(24730000, None)  # no limit
    assert parse_memory("") == Memory(None, None)
    assert parse_memory("MemTotal: 24730000 kB\nmemory.limit_in_bytes 9223372036854771712\n").usable_kb == 24730000
    assert parse_memory("MemTotal: 24730000 kB\nmemory.limit_in_bytes 1073741824\n") == Memory(24730000, 1024 * 1024)
    assert Memory(24730000, 262144).usable_kb == 262144 and Memory(1000, 262144).usable_kb == 1000
    assert Memory(None, None).usable_kb is None


def test_a_1_gib_vps_carries_358_pis_as_measured() -> None:
    assert carried(Memory(GIB)) == 358
    assert carried(Memory(512 * 1024)) == (512 * 1024 - BASE_KB) // SSHD_KB_PER_SESSION == 139
    assert carried(Memory(100 * 1024)) == 0  # less than the OS needs: none
    assert carried(Memory(None)) is None


def test_the_warning_comes_only_past_what_the_memory_carries() -> None:
    assert over_capacity(358, Memory(GIB)) is None
    assert over_capacity(10_000, Memory(None)) is None  # memory not read: nothing to say
    warning = over_capacity(1000, Memory(GIB))
    assert warning == ("1000 Pis' tunnel sessions x 2.3 MB of sshd each = 2,344 MB, plus about 184 MB for the OS "
                       "and Nginx, is more than this VPS's 1,024 MB (MemTotal): it carries about 358 Pis. Give it "
                       "more memory, or move 642 or more Pis to a second VPS (docs/redundancy.md, `pitunnel migrate`)")
    assert over_capacity(359, Memory(GIB)) is not None


def test_a_containers_memory_limit_counts_when_smaller() -> None:
    warning = over_capacity(200, Memory(24 * GIB, 256 * 1024))
    assert warning is not None and "this VPS's 256 MB (memory limit): it carries about 30 Pis" in warning
    assert over_capacity(200, Memory(256 * 1024, 24 * GIB)) == warning.replace("memory limit", "MemTotal")


FLEET = """
settings: {laptop_key: null, known_hosts: kh}
vps:
  main: {address: 203.0.113.1}
  other: {address: 203.0.113.2}
pis:
"""


@pytest.mark.parametrize(("pis", "warned"), [(30, False), (31, True)])
def test_provision_vps_warns_with_the_figures_and_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          pis: int, warned: bool) -> None:
    text = FLEET + "".join(f"  pi{i}: {{address: 10.0.0.{i}, vps: main, tunnels: {{ssh: {{type: ssh}}}}}}\n"
                           for i in range(1, pis + 1))
    text += "  far: {address: 10.0.1.1, vps: other, tunnels: {ssh: {type: ssh}}}\n"  # another VPS's: not counted
    inv = load(tmp_path, text)
    assert sessions_on(inv, inv.vps["main"]) == pis
    host = FakeHost("main", [("dpkg-query", "nginx installed"), ("MemTotal", "MemTotal: 24730000 kB\nmemory.max 268435456\n")])
    play = play_on(inv, {"main": host, "other": FakeHost("other")}, limit=frozenset({"main"}))  # type: ignore[dict-item]
    provision_vps(play)
    out = lines(capsys)
    assert play.failed == set()  # a warning, not a refusal
    assert [e for e in host.journal if e == "main read"] == ["main read"]  # read in the one gather
    warnings = [l for l in out if "tunnel sessions x 2.3 MB" in l]
    if warned:
        assert warnings[0].startswith(f"WARNING main {pis} Pis' tunnel sessions x 2.3 MB of sshd each")
        assert len(warnings) == 1 and [h for h, _ in play.reporter.warnings] == ["main"]  # and again under the recap
        assert f"ok main memory for the tunnel sessions - {pis} Pis' tunnel sessions need more than 256 MB (see the warning)" in out
    else:
        assert warnings == []
        assert f"ok main memory for the tunnel sessions - {pis} Pis' tunnel sessions, about 30 fit in 256 MB" in out
