"""The benchmark harness's logic (never its wall-clock figures): variants timed in turns, ratios of medians."""

import sys

import pytest

from audio_recipes.paths import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
harness = pytest.importorskip("harness")


def test_interleaved_runs_the_variants_in_alternating_turns():
    calls = []
    times = harness.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, runs=4, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then A B, B A, A B, B A
    assert {name: len(values) for name, values in times.items()} == {"a": 4, "b": 4}
    assert all(value >= 0 for values in times.values() for value in values)


def test_a_ratio_is_the_ratio_of_medians_with_the_rounds_spread():
    section = harness.Section("x", "X", "cmd")
    figure = section.add_ratio("speedup", [4.0, 9.0, 5.0], [1.0, 2.0, 1.0])
    assert figure.median == 5.0  # median 5 over median 1
    assert figure.values == [4.0, 4.5, 5.0] and figure.unit == "x"
    assert "| `speedup` | 5 | 4 - 5 | 3 | x |" in harness.section_markdown(section)
