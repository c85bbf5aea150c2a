"""Unit tests for bench.hops's pure parts: the points of the path, the Nginx edits, the tables."""

from __future__ import annotations

import pytest

from benchmarks.hops import STATIC, Point, per_request_us, points, table, variants, with_static

SITE = """# Managed by pitunnel (invoke provision-vps): the server that routes path-prefix tunnels.
server {
    listen 80 default_server;
    server_name _;
    server_tokens off;
    include /etc/nginx/pitunnel/locations/*.conf;

    location / {
        return 404 "no tunnel here\\n";
    }
}
"""
MAIN = "user www-data;\nworker_processes auto;\npid /run/nginx.pid;\n"


def path() -> list[Point]:
    return points(pi="pi1", pi_address="198.19.1.2", api_port=8080, vps_address="198.18.0.10", forward_port=20000,
                  path="/pi1/")


def test_points_follow_the_request_and_each_adds_one_hop() -> None:
    by_name = {p.name: p for p in path()}
    assert [p.name for p in path()] == ["api", "direct", "tunnel", "nginx", "via-nginx", "full"]
    assert by_name["api"] == Point("api", "pi1", "http://127.0.0.1:8080/", "on the Pi, to its API over loopback")
    assert by_name["direct"].url == "http://198.19.1.2:8080/" and by_name["direct"].host == "laptop"
    assert by_name["tunnel"].url == "http://127.0.0.1:20000/" and by_name["tunnel"].host == "vps"
    assert by_name["nginx"].url == f"http://198.18.0.10{STATIC}"
    assert by_name["via-nginx"].url == by_name["full"].url == "http://198.18.0.10/pi1/"
    assert (by_name["via-nginx"].host, by_name["full"].host) == ("vps", "laptop")
    # every point a hop is measured against comes before it
    seen: set[str] = set()
    for p in path():
        assert not p.after or p.after in seen, p
        seen.add(p.name)


def test_static_location_goes_before_the_catch_all() -> None:
    text = with_static(SITE)
    assert text.index(f"location = {STATIC} {{ return 200") < text.index("    location / {")
    assert text.count("location") == SITE.count("location") + 1
    with pytest.raises(ValueError, match="no `location / {`"):
        with_static("server {}\n")


def test_variants_change_one_thing_each() -> None:
    tried = variants(SITE, MAIN)
    site, main = tried["access_log off"]
    assert main == MAIN and "    server_tokens off;\n    access_log off;\n" in site
    site, main = tried["worker_processes 1"]
    assert site == SITE and "worker_processes 1;" in main and "auto" not in main
    with pytest.raises(ValueError, match="not as pitunnel and Debian write them"):
        variants(SITE, "worker_processes 4;\n")


def test_per_request_time() -> None:
    assert per_request_us(2000) == 500
    assert per_request_us(0) == float("inf")


def doc() -> dict[str, object]:
    rps = {"api": (5000, 10000), "direct": (4000, 8000), "tunnel": (2500, 4000), "nginx": (10000, 20000),
           "via-nginx": (2000, 3200), "full": (1600, 3000)}
    return {"date": "2026-11-30 13:00 UTC", "machine": "2 cores", "duration_s": 5, "rounds": 3,
            "order": [{"name": p.name, "what": p.what, "after": p.after} for p in path()],
            "points": {name: {"idle": [idle - 10, idle, idle + 10], "busy": [busy]} for name, (idle, busy) in rps.items()},
            "variants": {"access_log off": [1700, 1600, 1650]}}


def test_table_gives_each_hops_cost_and_the_verdict() -> None:
    text = table(doc())
    rows = {l.split(" | ")[0].strip("| "): l for l in text.splitlines() if l.startswith("| ")}
    # api 200 us; direct 250 us (+50); tunnel 400 us (+200 over the API); via-nginx 500 (+100); full 625 (+125)
    assert rows["api"].endswith("| 5000 | 200 |  | 10000 | 100 |  |")
    assert "| 4000 | 250 | +50 | 8000 | 125 | +25 |" in rows["direct"]
    assert "| 2500 | 400 | +200 | 4000 | 250 | +150 |" in rows["tunnel"]
    assert "| 2000 | 500 | +100 |" in rows["via-nginx"]
    assert "| 1600 | 625 | +125 |" in rows["full"]
    assert "Through the VPS at one connection: 0.400x direct's requests/s (>= 0.5x: NOT met); 375 us" in text
    assert "With the cores kept busy: 0.375x" in text
    assert "| access_log off | 1650 | 1.03x |" in text


def test_table_verdict_met_and_idle_only() -> None:
    d = doc()
    points_ = d["points"]
    assert isinstance(points_, dict)
    points_["full"] = {"idle": [2000], "busy": []}
    d["variants"] = {}
    text = table(d)
    assert "0.500x direct's requests/s (>= 0.5x: met)" in text
    assert "| full |" in text and "| - | - | - |" in text.split("| full |")[1].splitlines()[0]
    assert "With the cores kept busy" not in text and "Nginx on the VPS" not in text
