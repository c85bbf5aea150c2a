"""How many Pis a VPS's memory carries: each Pi's tunnel session costs the VPS's sshd a measured amount of memory;
provision-vps reads the VPS's memory in its one gather and warns (never refuses) when the inventory asks for more."""

from __future__ import annotations

from dataclasses import dataclass

from pitunnel.facts import Fact
from pitunnel.inventory import Inventory, VpsSpec
from pitunnel.ops import Observe

# What one Pi's tunnel session costs the VPS, in the kernel's view: its two sshd processes (2.0 MB of PSS) and
# their kernel memory. `invoke bench.capacity`, 2026-12-06, a bookworm lab VPS (OpenSSH 9.2): 2,395-2,399 kB per
# session at 100 and at 1,000 Pis (docs/performance.md, "Capacity of one VPS"). One session per Pi and VPS,
# whatever its number of tunnels.
SSHD_KB_PER_SESSION = 2400
# What a small VPS needs beside the sessions (its kernel, the OS, Nginx, the reaper): about 184 MB, issue 27's
# estimate for a 1 GiB VPS (a lab container, without a kernel of its own, measured 27 to 53 MB).
BASE_KB = 188_576

MEMORY_FACT_KEY = "memory"


@dataclass(frozen=True)
class Memory:
    """The VPS's memory: MemTotal, and the memory limit of its cgroup (a container VPS), both in kB."""

    total_kb: int | None
    limit_kb: int | None = None

    @property
    def usable_kb(self) -> int | None:
        """What its processes may use: the smaller of the two."""
        known = [kb for kb in (self.total_kb, self.limit_kb) if kb is not None]
        return min(known) if known else None


def parse_memory(output: str) -> Memory:
    """`MemTotal: N kB` from /proc/meminfo, then the cgroup's memory limit in bytes, if any (`memory.max` on
    cgroup v2, `max`: none; `memory.limit_in_bytes` on v1, where no limit is a huge number)."""
    total, limits = None, []
    for line in output.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "MemTotal:" and words[1].isdigit():
            total = int(words[1])
        elif len(words) == 2 and words[0] in ("memory.max", "memory.limit_in_bytes") and words[1].isdigit():
            limits.append(int(words[1]) // 1024)
    return Memory(total, min(limits) if limits else None)


MEMORY = Fact(MEMORY_FACT_KEY, "grep '^MemTotal:' /proc/meminfo; for f in /sys/fs/cgroup/memory.max "
              "/sys/fs/cgroup/memory/memory.limit_in_bytes; do [ -r $f ] && echo \"${f##*/} $(cat $f)\"; done; true",
              parse_memory)


def sessions_on(inv: Inventory, vps: VpsSpec) -> int:
    """The tunnel sessions the inventory makes on `vps`: one per Pi that keeps a tunnel to it."""
    return len(inv.pis_on(vps))


def carried(memory: Memory) -> int | None:
    """How many Pis' sessions `memory` carries beside the rest; None if the memory is unknown."""
    usable = memory.usable_kb
    return None if usable is None else max(0, (usable - BASE_KB) // SSHD_KB_PER_SESSION)


def _mb(kb: int) -> str:
    return f"{kb / 1024:,.0f} MB"


def over_capacity(sessions: int, memory: Memory) -> str | None:
    """The warning when `sessions` need more than `memory` carries (the figures, and what to do); None if they fit."""
    most, usable = carried(memory), memory.usable_kb
    if most is None or usable is None or sessions <= most:
        return None
    where = "memory limit" if usable == memory.limit_kb and memory.limit_kb != memory.total_kb else "MemTotal"
    return (f"{sessions} Pis' tunnel sessions x {SSHD_KB_PER_SESSION / 1024:.1f} MB of sshd each "
            f"= {_mb(sessions * SSHD_KB_PER_SESSION)}, plus about {_mb(BASE_KB)} for the OS and Nginx, is more than "
            f"this VPS's {_mb(usable)} ({where}): it carries about {most} Pis. Give it more memory, or move "
            f"{sessions - most} or more Pis to a second VPS (docs/redundancy.md, `pitunnel migrate`)")


def fits(sessions: int, memory: Memory) -> str:
    """The one line of the memory check when nothing is to be said."""
    most = carried(memory)
    if most is None:
        return "not read (no /proc/meminfo)"
    return f"{sessions} Pis' tunnel sessions, about {most} fit in {_mb(memory.usable_kb or 0)}"


def memory_observer(inv: Inventory, vps: VpsSpec) -> Observe[Memory]:
    """The VPS's memory, read in provision-vps's one gather; its line says whether the Pis' sessions fit."""
    sessions = sessions_on(inv, vps)
    return Observe(MEMORY, lambda m: fits(sessions, m) if over_capacity(sessions, m) is None else
                   f"{sessions} Pis' tunnel sessions need more than {_mb(m.usable_kb or 0)} (see the warning)",
                   title="memory for the tunnel sessions")
