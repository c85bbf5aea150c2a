"""Fuzzing the inventory loader (issue 11): random and mutated inventories, and mutated port lock files, only
ever end in an Inventory or in the tool's own InventoryError whose every problem is one line, each within a
time bound (Hypothesis's deadline) and all within a memory bound (peak RSS growth).

Deterministic in CI: derandomized, no example database, a fixed number of examples.
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitunnel.inventory import Inventory, InventoryError, load_inventory

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example.yml"
MINIMAL = """vps:
  main: {address: 203.0.113.1, port: 12345, tunnel_user: pitunnel}
defaults: {user: pi, connect_timeout: 10}
pis:
  pi1:
    address: 10.0.0.1
    tunnels:
      web: &web {type: http, local_port: 8080, path: /pi1/web/}
      ssh: {type: ssh, remote_port: 12346, public: true}
      cam: {<<: *web, path: null, server_name: cam.example.com}
"""
LOCK = "main:\n  pi1/web: 20000\n  pi2/ssh: 20001\n"
SEEDS = [EXAMPLE.read_text(), MINIMAL]
MAX_INPUT = 64 * 1024  # bytes fed to the loader per example
MEMORY_GROWTH = 256 << 20  # bytes the whole run may add to the process's peak RSS
FUZZ = settings(max_examples=150, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TOKENS = [
    "[", "]", "{", "}", ":", ": ", "- ", ", ", "? ", "&a ", "*a", "&b [*a, *a, *a]", "<<: *a", "<<: [*a, *a]",
    "!!set ", "!!binary ", "!!bool ", "!!timestamp ", "!!float ", "!!int ", "!!omap ", "!!pairs ", "!!str ",
    "!!python/object:os.system ", "!foo ", "~", "null", ".inf", "-.inf", ".nan", "-1", "0", "65536", "1e309",
    "0x1F", "0o17", "1_000", "2024-13-01", "yes", "no", "'", '"', "\\", "\\x00", "\n", "\r", "\t", "    ", "#",
    "|", ">", "%YAML 1.1\n", "---\n", "...\n", "\x00", "\x01", "\x7f", "\u2028", "\ufeff", "é", "\U0001f600",
    "auto", "ssh", "http", "/", "/./", "//", "~root/", "~nosuchuser/", "pi1", "main", "vps", "pis", "tunnels",
    "remote_port", "local_port", "server_name", "path", "host_key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
    "connect_timeout", "password_file", "sudo_password_file", "basic_auth_file", "tunnel_user", "www-data",
    "port_range", "[1024, 1023]", "x" * 300, "k" * 1100 + ": 1",
]
KEYS = ["settings", "defaults", "vps", "pis", "main", "pi1", "pi2", "tunnels", "ssh", "web", "address", "port",
        "user", "key", "password_file", "sudo_password_file", "host_key", "connect_timeout", "tunnel_user",
        "http_port", "https_port", "tls_certificate", "tls_key", "client_alive_interval", "port_range", "vps",
        "server_alive_interval", "disable_password_login", "type", "local_port", "remote_port", "public",
        "server_name", "path", "basic_auth_file", "known_hosts", "laptop_key", "<<", "x"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-70000, 70000), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["ssh", "http", "auto", "/pi1/web/", "/", "10.0.0.1", "vps.example.com", "pitunnel", "root",
                     "secrets/pi-password", "~/.ssh/id_ed25519", "*.example.com", "main", ""]),
    st.text(max_size=40),
)


@st.composite
def mutated(draw: Any, seeds: list[str]) -> bytes:
    """A seed with a few random insertions, deletions, repetitions and byte flips."""
    data = bytearray(draw(st.sampled_from(seeds)).encode())
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "repeat", "byte"]))
        if kind == "insert":
            data[at:at] = draw(st.sampled_from(TOKENS)).encode()
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 200))]
        elif kind == "repeat":
            piece = bytes(data[at:at + draw(st.integers(1, 80))])
            data[at:at] = piece * draw(st.integers(1, 60))
        elif data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
    return bytes(data[:MAX_INPUT])


def _documents() -> st.SearchStrategy[Any]:
    return st.recursive(SCALARS, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=6)), max_leaves=40)


@st.composite
def generated(draw: Any) -> bytes:
    """A random YAML document made of the inventory's own keys and awkward values."""
    document = draw(st.dictionaries(st.sampled_from(["settings", "defaults", "vps", "pis", "other"]),
                                    _documents(), max_size=5))
    return yaml.safe_dump(document, allow_unicode=draw(st.booleans())).encode()[:MAX_INPUT]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An inventory folder with the files the example names (private, one-line), and HOME pointing into it."""
    base = tmp_path_factory.mktemp("fuzz")
    home = base / "home"
    for name in ("home/.ssh/id_ed25519", "home/.ssh/id_ed25519.pub", "home/.ssh/vps_ed25519",
                 "secrets/pi-password", "secrets/vps-sudo-password", "secrets/pi1-web.htpasswd"):
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text("secret\n")
        (base / name).chmod(0o600)
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    yield base
    if old is None:
        del os.environ["HOME"]
    else:
        os.environ["HOME"] = old
    shutil.rmtree(base, ignore_errors=True)


def check(path: Path) -> None:
    """Loading ends in an Inventory or an InventoryError of one-line problems naming the file; nothing else."""
    try:
        assert isinstance(load_inventory(path, save_allocations=False), Inventory)
    except InventoryError as e:
        assert e.problems
        for problem in e.problems:
            line = str(problem)
            assert "\n" not in line and "Fix: " in line and line.startswith(str(problem.file)), line
            assert len(line) < 2000, line[:200]


@pytest.fixture(scope="module")
def peak() -> Iterator[None]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.monotonic()
    yield
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert grown < MEMORY_GROWTH, f"fuzzing grew peak memory by {grown >> 20} MiB"
    assert time.monotonic() - start < 60


@FUZZ
@given(text=st.one_of(mutated(SEEDS), generated()))
def test_random_and_mutated_inventories_end_in_inventory_errors(folder: Path, peak: None, text: bytes) -> None:
    path = folder / "hosts.yml"
    path.write_bytes(text)
    check(path)


@FUZZ
@given(text=mutated([LOCK]))
def test_mutated_port_lock_files_end_in_inventory_errors(folder: Path, peak: None, text: bytes) -> None:
    path = folder / "lock.yml"
    path.write_text(MINIMAL.replace("main: {address", "main: {port_range: [20000, 20010], address"))
    (folder / "lock.ports.yml").write_bytes(text)
    check(path)


def test_seeds_are_valid(folder: Path) -> None:
    """The fuzzing starts from inventories that load, so mutations explore near the valid ones."""
    for number, seed in enumerate(SEEDS):
        path = folder / f"seed{number}.yml"
        path.write_text(seed)
        assert isinstance(load_inventory(path, save_allocations=False), Inventory)
