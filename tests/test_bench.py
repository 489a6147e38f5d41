"""The benchmark's figures are consistent with each other (its speed is printed, never asserted)."""
from __future__ import annotations

import json

import pytest

from minijepa.bench import main as bench


def test_bench_reports_consistent_figures(capsys, tmp_path):
    r = bench(["--steps", "2", "--warmup", "1", "--batch-size", "8", "--json", str(tmp_path / "bench.json")])
    assert r["img_per_s"] > 0 and r["gflop_per_step"] > 1
    assert r["img_per_s"] == pytest.approx(8 / (r["ms_per_step"] / 1000), rel=1e-6)
    assert r["tflop_per_s"] == pytest.approx(r["gflop_per_step"] / r["ms_per_step"], rel=1e-6)
    assert (r["amp"], r["compile"]) == ("off", False)  # the training loop's choice on a CPU: float32, eager
    assert json.loads((tmp_path / "bench.json").read_text()) == r
    assert "img_per_s=" in capsys.readouterr().out
