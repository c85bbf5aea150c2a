"""Unit tests for bench.datapath's pure parts: wrk's output, the tunnel config variants, the tables."""

from __future__ import annotations

import pytest

from benchmarks.datapath import (WrkResult, cpu_seconds, duration_ms, listen_overflows, median_result, parse_wrk,
                                 table, targets, tunnel_config, upstream_config)

WRK_OK = """Running 10s test @ http://198.18.0.10/pi1/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    11.52ms    3.01ms  48.90ms   80.12%
    Req/Sec     1.39k   120.55     1.70k    71.00%
  Latency Distribution
     50%   10.98ms
     75%   12.40ms
     90%   14.87ms
     99%   22.31ms
  27705 requests in 10.01s, 8.93MB read
Requests/sec:   2767.83
Transfer/sec:      0.89MB
"""

WRK_ERRORS = """Running 5s test @ http://198.19.1.2:80/
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.00us  100.00us   1.00s    90.00%
    Req/Sec     1.60k    50.00     1.70k    80.00%
  Latency Distribution
     50%  580.50us
     75%  640.00us
     90%  700.00us
     99%    1.02s
  8000 requests in 5.00s, 2.00MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:   1600.00
Transfer/sec:    409.60KB
"""


def test_parse_wrk_reads_rps_percentiles_and_count() -> None:
    r = parse_wrk(WRK_OK)
    assert r == WrkResult(rps=2767.83, p50_ms=10.98, p99_ms=22.31, requests=27705, errors=0)


def test_parse_wrk_converts_units_and_sums_errors() -> None:
    r = parse_wrk(WRK_ERRORS)
    assert r.p50_ms == pytest.approx(0.5805)  # microseconds -> ms
    assert r.p99_ms == pytest.approx(1020.0)  # seconds -> ms
    assert r.errors == 3 + 1 + 2 + 7
    assert r.requests == 8000


def test_parse_wrk_without_latency_flag_is_an_error() -> None:
    without = "\n".join(l for l in WRK_OK.splitlines() if "%" not in l or "Latency " in l or "Req/Sec" in l)
    with pytest.raises(ValueError, match="50%"):
        parse_wrk(without)
    with pytest.raises(ValueError, match="Requests/sec"):
        parse_wrk("unable to connect to 198.18.0.10:80 Connection refused\n")


@pytest.mark.parametrize("text,ms", [("812.00us", 0.812), ("1.23ms", 1.23), ("2.01s", 2010.0), ("1.50m", 90_000.0)])
def test_duration_ms(text: str, ms: float) -> None:
    assert duration_ms(text) == pytest.approx(ms)


def test_duration_ms_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        duration_ms("12")


def test_median_result_takes_each_figure_median_and_sums_counts() -> None:
    rs = [WrkResult(100, 1.0, 9.0, 1000, 0), WrkResult(300, 3.0, 5.0, 3000, 2), WrkResult(200, 2.0, 7.0, 2000, 1)]
    assert median_result(rs) == WrkResult(200, 2.0, 7.0, 6000, 3)
    with pytest.raises(ValueError):
        median_result([])


CONFIG = """# Managed by pitunnel
Host pitunnel-vps
    HostName 198.18.0.10
    Ciphers chacha20-poly1305@openssh.com,aes128-gcm@openssh.com
    Compression no
    LogLevel ERROR
"""


def test_tunnel_config_sets_cipher_and_compression_keeping_the_rest() -> None:
    text = tunnel_config(CONFIG, cipher="aes128-gcm@openssh.com", compression=True)
    lines = [l.strip() for l in text.splitlines()]
    assert lines.count("Ciphers aes128-gcm@openssh.com") == 1
    assert not any(l.startswith("Ciphers chacha") for l in lines)
    assert lines.count("Compression yes") == 1 and "Compression no" not in lines
    assert "HostName 198.18.0.10" in lines and "LogLevel ERROR" in lines and lines[1] == "Host pitunnel-vps"
    assert all(l.startswith("    ") for l in text.splitlines()[2:])  # still under the Host entry


def test_tunnel_config_keeps_cipher_when_none() -> None:
    text = tunnel_config(CONFIG, cipher=None, compression=False)
    assert "    Ciphers chacha20-poly1305@openssh.com,aes128-gcm@openssh.com" in text.splitlines()
    assert text.count("Compression") == 1


def http_row(rps: float, p50: float, p99: float) -> dict[str, float]:
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "requests": rps * 10, "errors": 0}


def doc(tunnel_rps_32: float, tunnel_p99_32: float) -> dict[str, object]:
    tunnel = {"1": http_row(900, 1.0, 2.0), "32": http_row(tunnel_rps_32, 12.0, tunnel_p99_32)}
    return {
        "date": "2026-11-24 09:00 UTC", "machine": "2 cores", "duration_s": 10, "rounds": 3, "bulk_mb": 100.0,
        "http": {"direct": {"1": http_row(1000, 0.9, 1.5), "32": http_row(4000, 8.0, 10.0)}, "tunnel": tunnel},
        "bulk": {"direct": {"download": 1.0, "upload": 2.0}, "tunnel": {"download": 4.0, "upload": 5.0}},
        "pi_listen_overflows": {"direct": {"1": 0, "32": 3}, "tunnel": {"1": 0, "32": 5}},
        "tuning": [{"name": "as provisioned", "setting": "baseline", "http": tunnel,
                    "bulk": {"download": 4.0, "upload": 5.0}},
                   {"name": "upstream keepalive off", "setting": "nginx upstream keepalive",
                    "http": {"1": http_row(500, 2.0, 3.0), "32": http_row(1000, 30.0, 80.0)},
                    "bulk": {"download": 4.0, "upload": 5.0}, "tunnel_cpu_s": {"download": 0.8, "upload": 1.1},
                    "pi_listen_overflows": {"1": 0, "32": 12}}],
    }


def test_targets_at_the_most_connections_and_at_one() -> None:
    one = {"rps_ratio_one": True, "p99_ratio_one": True}  # 0.90x and 1.33x at one connection
    assert targets(doc(2800, 20.0)) == {"rps_ratio": True, "p99_ratio": True} | one  # 0.70x, 2.0x: on the line
    assert targets(doc(2799, 20.1)) == {"rps_ratio": False, "p99_ratio": False} | one
    on_line = doc(2800, 20.0)
    on_line["http"]["tunnel"]["1"] = http_row(500, 1.0, 15.0)  # type: ignore[index]  # 0.5x and 10x
    assert targets(on_line) == {"rps_ratio": True, "p99_ratio": True} | one
    under = doc(2800, 20.0)
    under["http"]["tunnel"]["1"] = http_row(499, 1.0, 15.1)  # type: ignore[index]
    assert targets(under) == {"rps_ratio": True, "p99_ratio": True, "rps_ratio_one": False, "p99_ratio_one": False}
    only_one = doc(2800, 20.0)
    for path in ("direct", "tunnel"):
        del only_one["http"][path]["32"]  # type: ignore[index]
    assert set(targets(only_one)) == {"rps_ratio", "p99_ratio"}  # one connection is then "the most"


def test_table_shows_ratios_throughput_and_verdicts() -> None:
    text = table(doc(2000, 25.0))
    rows = [l for l in text.splitlines() if l.startswith("| 32 |")]
    assert rows[0] == "| 32 | direct to the Pi | 4000 | 8.00 | 10.00 | 0 | 1.00x | 1.00x | 3 |"
    assert rows[1] == "| 32 | VPS Nginx + tunnel | 2000 | 12.00 | 25.00 | 0 | 0.50x | 2.50x | 5 |"
    assert "requests/s 0.500x direct (>= 0.7x): NOT met; p99 2.500x direct (<= 2x): NOT met" in text
    assert "Targets at 1 connection: requests/s 0.900x direct (>= 0.5x): met; p99 1.333x direct (<= 10x): met" in text
    assert "| download (Pi to laptop) | 100.0 | 25.0 | 0.25x |" in text  # 100 MB in 1 s vs 4 s
    assert "| upload (laptop to Pi) | 50.0 | 20.0 | 0.40x |" in text
    assert ("| nginx upstream keepalive | upstream keepalive off | 500 | 3.00 | 1000 | 80.00 | 25.0 | 20.0 | "
            "0.80 / 1.10 | 12 |") in text
    met = table(doc(3600, 11.0))
    assert "requests/s 0.900x direct (>= 0.7x): met; p99 1.100x direct (<= 2x): met" in met


UPSTREAMS = """# Managed by pitunnel
upstream pitunnel_pi1_api {
    server 127.0.0.1:20000;
    keepalive 16;
}

upstream pitunnel_pi2_api {
    server 127.0.0.1:20001;
    keepalive 16;
}
"""


def test_upstream_config_sets_removes_or_keeps_keepalive() -> None:
    assert upstream_config(UPSTREAMS, None) == UPSTREAMS
    more = upstream_config(UPSTREAMS, 64)
    assert more.count("    keepalive 64;") == 2 and "keepalive 16" not in more
    off = upstream_config(UPSTREAMS, 0)
    assert "keepalive" not in off
    assert off.count("server 127.0.0.1:") == 2 and off.count("{") == off.count("}") == 2


def test_cpu_seconds_sums_utime_and_stime_of_each_process() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    one = "4242 (ssh) S 4200 4242 4242 0 -1 4194560 900 0 0 0 150 50 0 0 20 0 1 0 123 0 0"
    two = "4343 (odd name) S) R 1 4343 4343 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 456 0 0"
    assert cpu_seconds(one, 100) == pytest.approx(2.0)
    assert cpu_seconds(f"{one}\n{two}\n", 100) == pytest.approx(2.1)
    assert cpu_seconds("", 100) == 0.0


NETSTAT = """TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPTimeouts
TcpExt: 0 0 17 19 4
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
"""


def test_listen_overflows_reads_the_tcpext_counter() -> None:
    assert listen_overflows(NETSTAT) == 17
    with pytest.raises(ValueError):
        listen_overflows("IpExt: InNoRoutes\nIpExt: 0\n")


def test_require_wrk_exits_with_one_line_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from benchmarks import datapath

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as exc:
        datapath.require_wrk()
    message = str(exc.value.code)
    assert "wrk is not installed" in message and "\n" not in message
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/wrk")
    datapath.require_wrk()  # no exit when it is there
