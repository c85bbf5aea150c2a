"""Unit tests for bench.capacity's pure parts: the per-tunnel arithmetic, the 1 GiB capacity, the readings of
cgroup v1 and sshd's journal, and capacity.json's shape (the issue's keys, in every row)."""

from __future__ import annotations

import json

import pytest

from benchmarks.capacity_doc import (GIB_KB, ROW_KEYS, Reading, Row, base_kb, cpu_per_hour, document, failure_kinds,
                                     maxstartups_drops, per_tunnel, storm_timeline, table, tunnels_in, used_kb)


def row(n: int, used: int = 2000, base: int = 150_000) -> Row:
    return Row(n, 1900, used, 12.5, 0, 7, 40.0, 3.0, 2.0, 5.0, 1.5, base_used_kb=base)


def test_per_tunnel_divides_the_growth_by_the_sessions_added() -> None:
    one, many = Reading(3, 5_000, 200_000), Reading(201, 215_000, 420_000)
    assert per_tunnel(one, many, 99) == (2121, 2222, 2.0)
    with pytest.raises(ValueError):
        per_tunnel(one, many, 0)


def test_the_base_is_every_process_with_one_session_less_that_session() -> None:
    assert base_kb(Reading(3, 5_000, 200_000, 150_000), 2_000) == 148_000
    assert base_kb(Reading(3, 5_000, 200_000, 1_000), 2_000) == 0


def test_tunnels_in_1_gib_beside_the_base() -> None:
    assert tunnels_in(GIB_KB, 150_000, 2_000) == (1_048_576 - 150_000) // 2_000 == 449
    assert tunnels_in(GIB_KB, 2 * GIB_KB, 2_000) == 0
    assert tunnels_in(GIB_KB, 0, 0) == 0


def test_cpu_over_a_window_scaled_to_an_hour() -> None:
    assert cpu_per_hour(0.5, 60) == 30.0
    assert cpu_per_hour(0.5, 0) == 0.0


def test_used_memory_is_usage_less_inactive_file_pages() -> None:
    stat = "cache 4096000\ntotal_inactive_file 1048576\ntotal_active_file 2048\n"
    assert used_kb(stat, 3 * 1048576) == 2048
    assert used_kb("rss 1\n", 4096) == 4


def test_maxstartups_drops_in_either_openssh_wording() -> None:
    journal = ("Accepted publickey for pitunnel from 198.18.0.101 port 4 ssh2: ED25519 SHA256:x\n"
               "drop connection #10 from [198.18.0.101]:50522 on [198.18.0.10]:22 past MaxStartups\n"
               "srclimit_penalise: ...\n"
               "error: beginning MaxStartups throttling\n"
               "drop connection #31 from [198.18.0.101]:50530 on [198.18.0.10]:22 exceeded MaxStartups\n")
    assert maxstartups_drops(journal) == 2


def test_capacity_json_has_the_issue_keys_and_the_largest_run_gives_the_capacity() -> None:
    doc = document([row(10, used=3_000), row(100)], date="2026-12-06 19:00 UTC", machine="2 cores", revision="abc",
                   release="bookworm")
    loaded = json.loads(json.dumps(doc))
    assert list(loaded)[:5] == ["date", "machine", "revision", "tunnels_in_1gib", "tunnels_in_1gib_how"]
    assert loaded["tunnels_in_1gib"] == 449  # from n = 100's 2,000 kB per tunnel, not n = 10's 3,000
    assert [r["n"] for r in loaded["rows"]] == [10, 100]
    for r in loaded["rows"]:
        assert set(ROW_KEYS) <= set(r)
    shown = table(loaded)
    assert "| 100 | 1900 | 2000 |" in shown and "Tunnels in a 1 GiB VPS: 449" in shown


def test_no_rows_no_capacity() -> None:
    assert document([], date="d", machine="m", revision="r", release="bookworm")["tunnels_in_1gib"] == 0


def test_each_variant_changes_one_thing_and_is_undone() -> None:
    from benchmarks import capacity_variants as cv

    found = {v.name: v for v in cv.variants(["0.0.0.0:12346", "127.0.0.1:30001"])}
    assert list(found) == ["as provisioned", "listed", "no PAM", "no PAM, no re-exec", "malloc trimmed"]
    assert found["as provisioned"].setup == found["as provisioned"].undo == "true" and found["as provisioned"].port is None
    listed = found["listed"]
    assert "PermitListen 0.0.0.0:12346 127.0.0.1:30001/" in listed.setup and listed.port is None
    assert listed.setup.startswith(f"cp -p {cv.DROPIN} ") and listed.undo.startswith(f"mv /root/10-pitunnel.conf.bench {cv.DROPIN}")
    for name, flags in (("no PAM", "-D -f"), ("no PAM, no re-exec", "-D -r -f")):
        second = found[name]
        assert second.port == cv.SECOND_PORT and f"/usr/sbin/sshd {flags} {cv.SECOND_CONFIG}" in second.setup
        assert "UsePAM no\n" in second.setup and f"Include {cv.DROPIN}\n" in second.setup  # the same Match block
        assert f"sshd -t -f {cv.SECOND_CONFIG}" in second.setup and f"systemctl stop {cv.SECOND_UNIT}" in second.undo
    trimmed = found["malloc trimmed"]
    assert trimmed.port is None and "Environment=GLIBC_TUNABLES=%s" in trimmed.setup and cv.TUNABLES in trimmed.setup
    assert trimmed.setup.endswith(f"grep -qx 'GLIBC_TUNABLES={cv.TUNABLES}'")  # the unit proven to have it
    assert trimmed.undo == f"rm -f {cv.MALLOC_DROPIN} && systemctl daemon-reload && systemctl restart ssh"


def test_the_variants_table_has_a_row_each() -> None:
    from benchmarks.capacity_variants import VariantRow, table as variants_table

    text = variants_table([VariantRow("as provisioned", 1000, 100, 2100, 2300), VariantRow("listed", 1000, 100, 9800, 10100)])
    assert text.splitlines()[2] == "| as provisioned | 1,000 | 100 | 2,100 | 2,300 |"
    assert text.splitlines()[3] == "| listed | 1,000 | 100 | 9,800 | 10,100 |"


def test_maxstartups_drops_are_counted_from_the_throttling_summary_when_there_is_one() -> None:
    journal = ("error: beginning MaxStartups throttling\n"
               "drop connection #14 from [198.18.0.101]:39634 on [198.18.0.10]:12345 past MaxStartups\n"
               "exited MaxStartups throttling after 00:01:59, 7766 connections dropped\n"
               "exited MaxStartups throttling after 00:00:03, 12 connections dropped\n")
    assert maxstartups_drops(journal) == 7778


def test_the_pis_ssh_errors_are_counted_by_kind_with_addresses_and_numbers_made_generic() -> None:
    stderr = ("ssh: connect to host 198.18.0.10 port 12345: Connection timed out\n"
              "Connection timed out during banner exchange\n"
              "Connection to 198.18.0.10 port 12345 timed out\n"
              "ssh: connect to host 198.18.0.10 port 12345: Connection timed out\n\n"
              "Error: remote port forwarding failed for listen port 30007\n")
    assert failure_kinds(stderr) == {"ssh: connect to host ADDR port N: Connection timed out": 2,
                                     "Connection timed out during banner exchange": 1,
                                     "Connection to ADDR port N timed out": 1,
                                     "Error: remote port forwarding failed for listen port N": 1}
    assert list(failure_kinds(stderr))[0].startswith("ssh: connect")  # most first
    assert failure_kinds("") == {}


def test_the_storm_timeline_counts_sshds_events_per_window_from_its_start() -> None:
    journal = ("[  990.000001] vps sshd[10]: Accepted publickey for pitunnel from 198.18.0.101 port 1 ssh2\n"  # before
               "[ 1000.500000] vps sshd[11]: Server listening on 0.0.0.0 port 12345.\n"
               "[ 1000.900000] vps sshd[12]: Postponed publickey for pitunnel from 198.18.0.101 port 2 ssh2 [preauth]\n"
               "[ 1001.000000] vps sshd[12]: Accepted publickey for pitunnel from 198.18.0.101 port 2 ssh2\n"
               "[ 1004.000000] vps sshd[13]: Connection closed by 198.18.0.101 port 3 [preauth]\n"
               "[ 1009.999999] vps sshd[11]: drop connection #10 from [198.18.0.101]:4 on [198.18.0.10]:12345 "
               "past MaxStartups\n"
               "[ 1031.000000] vps sshd-session[14]: Accepted publickey for pitunnel from 198.18.0.101 port 5 ssh2\n"
               "[ 1032.000000] vps sshd-session[15]: Timeout before authentication for 198.18.0.101 port 6\n"
               "not a journal line\n")
    zero = {"logins": 0, "given_up_preauth": 0, "dropped": 0}
    assert storm_timeline(journal, 1000.0) == [
        {"from_s": 0.0, "logins": 1, "given_up_preauth": 1, "dropped": 1},
        {"from_s": 10.0, **zero}, {"from_s": 20.0, **zero},
        {"from_s": 30.0, "logins": 1, "given_up_preauth": 1, "dropped": 0}]
    assert storm_timeline(journal, 2000.0) == []
    assert storm_timeline(journal, 1000.0, step=60)[0]["logins"] == 2

