"""Per-module figures of the last `mutmut run` (mutmut 3 keeps them in mutants/**/*.py.meta): killed, survived,
no tests, timeout, not checked, and the score (killed+timeout over those checked). Usage:
    .venv/bin/python scripts/mutation_figures.py [module-prefix ...]
    .venv/bin/python scripts/mutation_figures.py --groups     # issue 23's groups: engine, site, day-two flows"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code  # type: ignore[import-not-found]


# Issue 23's groups: the engine (connecting, running, facts, ops, the reconciler), the site, each day-two flow.
GROUPS = {
    "engine": ("pitunnel.runner", "pitunnel.play", "pitunnel.remote", "pitunnel.link", "pitunnel.hostkeys",
               "pitunnel.facts", "pitunnel.ops", "pitunnel.guard", "pitunnel.reconcile", "pitunnel.roles.vps.checks"),
    "site": ("pitunnel.roles.site",),
    "rotate": ("pitunnel.roles.rotate",),
    "laptopkey": ("pitunnel.roles.laptopkey",),
    "rekey": ("pitunnel.roles.rekey",),
    "migrate": ("pitunnel.roles.migrate",),
    "revoke": ("pitunnel.roles.revoke",),
    "enroll": ("pitunnel.roles.enroll", "pitunnel.enroll"),
    "whole": ("pitunnel",),
}


def module_counts() -> list[tuple[str, Counter[str]]]:
    rows = []
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        module = ".".join(meta.relative_to("mutants").with_suffix("").with_suffix("").parts)
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        if codes:
            rows.append((module, Counter(status_by_exit_code[code] for code in codes.values())))
    return rows


def in_group(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def groups() -> None:
    rows = module_counts()
    print(f"{'group':<10} {'mutants':>7} {'checked':>7} {'score':>6}")
    for name, prefixes in GROUPS.items():
        c: Counter[str] = Counter()
        for module, counts in rows:
            if in_group(module, prefixes):
                c.update(counts)
        checked = c["killed"] + c["survived"] + c["no tests"] + c["timeout"]
        score = (c["killed"] + c["timeout"]) / checked if checked else 0.0
        print(f"{name:<10} {sum(c.values()):>7} {checked:>7} {score:>6.1%}")


def main(prefixes: list[str]) -> None:
    if prefixes == ["--groups"]:
        return groups()
    rows = [(m, c) for m, c in module_counts() if not prefixes or any(m.startswith(p) for p in prefixes)]
    total: Counter[str] = Counter()
    for _, counts in rows:
        total.update(counts)
    print(f"{'module':<28} {'mutants':>7} {'killed':>7} {'survived':>8} {'no tests':>8} {'timeout':>7} "
          f"{'unchecked':>9} {'score':>6}")
    for module, c in [*rows, ("TOTAL", total)]:
        checked = c["killed"] + c["survived"] + c["no tests"] + c["timeout"]
        score = (c["killed"] + c["timeout"]) / checked if checked else 0.0
        print(f"{module:<28} {sum(c.values()):>7} {c['killed']:>7} {c['survived']:>8} {c['no tests']:>8} "
              f"{c['timeout']:>7} {c['not checked']:>9} {score:>6.1%}")


if __name__ == "__main__":
    main(sys.argv[1:])
