"""Per-module figures of the last `mutmut run` (mutmut 3 keeps them in mutants/**/*.py.meta): killed, survived,
no tests, timeout, not checked, and the score (killed+timeout over those checked). Usage:
    .venv/bin/python scripts/mutation_figures.py [module-prefix ...]"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code  # type: ignore[import-not-found]


def main(prefixes: list[str]) -> None:
    rows = []
    total: Counter[str] = Counter()
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        module = ".".join(meta.relative_to("mutants").with_suffix("").with_suffix("").parts)
        if prefixes and not any(module.startswith(p) for p in prefixes):
            continue
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        counts = Counter(status_by_exit_code[code] for code in codes.values())
        if not codes:
            continue
        rows.append((module, counts))
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
