"""scripts/mutation_sample.py: the sample is uniform over the mutants not checked, and the estimate counts the
checked ones as they are and the rest at the sample's rate, inside Wilson's 95 % interval."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mutation_sample.py"
spec = importlib.util.spec_from_file_location("mutation_sample", SCRIPT)
assert spec and spec.loader
sample = importlib.util.module_from_spec(spec)
sys.modules["mutation_sample"] = sample
spec.loader.exec_module(sample)
Mutant = sample.Mutant  # the script is no module of a package: its types are Any here


def tree(checked: int, killed: int, unchecked: int) -> list[Mutant]:
    return ([Mutant(f"pitunnel.a.x_f__mutmut_{i}", "pitunnel.a", "killed" if i < killed else "survived")
             for i in range(checked)] +
            [Mutant(f"pitunnel.b.x_g__mutmut_{i}", "pitunnel.b", "not checked") for i in range(unchecked)])


def test_wilson_matches_the_textbook_interval_and_the_correction_narrows_it() -> None:
    low, high = sample.wilson(90, 100, 1.0)
    assert (round(low, 4), round(high, 4)) == (0.8256, 0.9448)
    narrow = sample.wilson(90, 100, 0.5)
    assert low < narrow[0] < 0.9 < narrow[1] < high
    assert sample.wilson(100, 100, 1.0)[1] == pytest.approx(1.0)


def test_the_draw_takes_only_unchecked_mutants_and_the_same_seed_draws_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sample, "mutants", lambda: tree(50, 40, 200))
    drawn = sample.draw(30, 7)
    assert len(drawn) == len(set(drawn)) == 30 and all(".b." in name for name in drawn)
    assert drawn == sample.draw(30, 7) != sample.draw(30, 8)
    assert len(sample.draw(500, 7)) == 200


def test_the_estimate_weighs_the_sample_by_the_mutants_it_stands_for(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    every = tree(100, 100, 1000)  # 100 checked, all killed; 1,000 not checked
    names = [m.name for m in every[100:200]]  # a sample of 100 of those, 50 of them run: 40 killed
    ran = {name: ("killed" if i < 40 else "survived") for i, name in enumerate(names[:50])}
    monkeypatch.setattr(sample, "mutants", lambda: [Mutant(m.name, m.module, ran.get(m.name, m.status))
                                                     for m in every])
    (tmp_path / "s.txt").write_text("\n".join(names))
    text = sample.estimate(tmp_path / "s.txt", "")
    assert "1100 mutants; 100 checked in full, 100.0% killed; of the other 1000, a random sample of 50 run " \
           "(50 of it not yet), 80.0% killed" in text
    assert "score 81.8% (95 % interval" in text  # (100 + 1000 * 0.8) / 1100
    assert sample.estimate(tmp_path / "s.txt", "pitunnel.a").startswith("no mutant of the sample")
