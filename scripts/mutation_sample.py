"""A whole-tree mutation score when a full run does not fit in the time there is: mutmut runs the mutants it
expects to be fastest first, so the ones a stopped run has checked are not a fair sample of the tree (the slow
ones, covered by many tests, are left). This draws a uniform random sample of the mutants not checked yet, and
afterwards estimates the score of every mutant: the checked ones as they are, the rest at the sample's rate,
with a 95 % interval (Wilson's, with the finite population correction). Usage, in the folder of a stopped run:
    .venv/bin/python scripts/mutation_sample.py draw 500 --seed 23 > /tmp/sample.txt   # names, one a line
    .venv/bin/mutmut run --max-children 4 $(cat /tmp/sample.txt)
    .venv/bin/python scripts/mutation_sample.py estimate /tmp/sample.txt [module-prefix]
Estimate before any other mutant is run: the checked ones and the sample must be those of the draw."""

from __future__ import annotations

import json
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

KILLED = frozenset({"killed", "timeout"})


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str
    status: str  # mutmut's: killed, survived, no tests, timeout, not checked, ...


def mutants() -> list[Mutant]:
    from mutmut.stats import status_by_exit_code  # type: ignore[import-not-found]
    found = []
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        module = ".".join(meta.relative_to("mutants").with_suffix("").with_suffix("").parts)
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        found += [Mutant(name, module, status_by_exit_code[code]) for name, code in sorted(codes.items())]
    return found


def in_scope(mutant: Mutant, prefix: str) -> bool:
    return not prefix or mutant.module == prefix or mutant.module.startswith(prefix + ".")


def draw(size: int, seed: int) -> list[str]:
    pool = [m.name for m in mutants() if m.status == "not checked"]
    return sorted(random.Random(seed).sample(pool, min(size, len(pool))))


def wilson(k: int, n: int, fpc: float, z: float = 1.96) -> tuple[float, float]:
    """The 95 % interval of a rate seen as k of n, narrowed by the finite population correction fpc."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n) * fpc
    return max(0.0, centre - half), min(1.0, centre + half)


def estimate(sample_file: Path, prefix: str) -> str:
    drawn = set(sample_file.read_text().split())
    every = [m for m in mutants() if in_scope(m, prefix)]
    sample = [m for m in every if m.name in drawn]
    done = [m for m in every if m.name not in drawn and m.status != "not checked"]
    rest = len(every) - len(done)  # the pool the sample was drawn from
    ran = [m for m in sample if m.status != "not checked"]
    if not ran:
        return f"no mutant of the sample {sample_file} has been run yet"
    k, n = sum(m.status in KILLED for m in ran), len(ran)
    fpc = math.sqrt((rest - n) / (rest - 1)) if rest > 1 else 0.0
    low, high = wilson(k, n, fpc)
    killed = sum(m.status in KILLED for m in done)
    whole = len(every)
    return (f"{prefix or 'whole tree'}: {whole} mutants; {len(done)} checked in full, {killed / max(1, len(done)):.1%} "
            f"killed; of the other {rest}, a random sample of {n} run ({len(sample) - n} of it not yet), "
            f"{k / n:.1%} killed\n"
            f"score {(killed + rest * k / n) / whole:.1%} (95 % interval "
            f"{(killed + rest * low) / whole:.1%} to {(killed + rest * high) / whole:.1%})")


def main(args: list[str]) -> None:
    if args[:1] == ["draw"] and len(args) in (2, 4) and args[2:3] in ([], ["--seed"]):
        print("\n".join(draw(int(args[1]), int(args[3]) if len(args) == 4 else 23)))
    elif args[:1] == ["estimate"] and len(args) in (2, 3):
        print(estimate(Path(args[1]), args[2] if len(args) == 3 else ""))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
