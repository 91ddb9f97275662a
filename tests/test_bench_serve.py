"""bench.serve's reporting (the app under load is measured by the benchmark itself, not here)."""

import pytest

from bench.serve import main, median_round, summarize, table


def round_of(wall: float, single: float = 3.0, n: int = 16) -> dict:
    return summarize(n, wall, [{"ok": True, "latency": wall, "error": None}] * n, single, 32)


def test_the_round_of_median_wall_time_is_reported_with_every_speedup():
    tries = [round_of(9.6), round_of(8.0), round_of(8.8), round_of(12.0), round_of(9.0)]
    middle = median_round(tries)
    assert middle["wall_s"] == 9.0 and middle["speedup"] == round(16 * 3.0 / 9.0, 2)
    assert middle["speedups"] == [5.0, 6.0, 5.45, 4.0, 5.33]
    assert median_round(tries[:2])["wall_s"] == 8.0  # an even count: the lower middle one
    assert "speedups" not in median_round(tries[:1])  # one round: as before


def test_the_table_names_the_range_of_the_rounds():
    result = {"machine": "a CPU", "date": "2026-12-05", "app_args": "", "tokens": 32, "startup_s": 8.0, "single_s": 3.0,
              "repeats": 2, "rounds_each": 3, "rounds": [median_round([round_of(8.0), round_of(9.0), round_of(10.0)])]}
    text = table(result)
    assert "| 16 | 16/16 | 9.0 |" in text
    assert "the round of median wall time of 3; the speed-ups of all of them: 16 at once 4.8-6.0 x" in text
    assert "16 at once 16/16, speed-up 5.33" in text


def test_rounds_must_be_at_least_one(capsys):
    with pytest.raises(SystemExit):
        main(["--rounds", "0", "--out", ""])
    assert "--rounds must be 1 or more" in capsys.readouterr().err
