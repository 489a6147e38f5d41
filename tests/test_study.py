"""The study's tables summarise finished runs correctly, and finished runs are never trained again."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from minijepa import study
from minijepa.evaluate import METRICS


def fake_run(path, acc: float, baseline: float | None, img_per_s: float, mem: float) -> None:
    """A finished run directory as train + evaluate leave it (only the fields the study reads)."""
    path.mkdir(parents=True)
    result = {"ijepa": {m: acc for m in METRICS}}
    if baseline is not None:
        result["random_init"] = {m: baseline for m in METRICS}
    (path / "eval.json").write_text(json.dumps(result))
    rows = [{"step": s, "loss": 1.0 / (s + 1)} for s in range(20)]
    rows[9].update(img_per_s=1.0, erank=9.0, feat_std=0.5, peak_mem_mb=mem / 2)  # the first window (warm-up) is ignored
    rows[19].update(img_per_s=img_per_s, erank=5.0, feat_std=0.125, peak_mem_mb=mem)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_compare_table_has_mean_and_spread_over_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "run", lambda cmd: pytest.fail(f"a finished run was started again: {cmd}"))
    out = tmp_path / "compare"
    fake_run(out / "p-latent-seed0", 0.80, 0.70, 100.0, 500.0)
    fake_run(out / "p-latent-seed1", 0.84, 0.72, 120.0, 600.0)
    fake_run(out / "p-pixels-seed0", 0.75, None, 90.0, 400.0)
    fake_run(out / "p-pixels-seed1", 0.77, None, 90.0, 400.0)
    table = study.compare(out, "p", [0, 1]).splitlines()
    assert table[2].startswith("| I-JEPA (latent targets) | 82.0 ± 2.8 | 82.0 ± 2.8")
    assert table[2].endswith("| 110 | 600 |")
    assert table[3].startswith("| pixel targets | 76.0 ± 1.4")
    assert table[4].startswith("| random init | 71.0 ± 1.4")


def test_ablation_rows_follow_the_variants(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "run", lambda cmd: pytest.fail(f"a finished run was started again: {cmd}"))
    monkeypatch.setattr(study, "ABLATIONS", {"baseline (demo preset)": {}, "lr 3e-4": {"lr": "3e-4"}})
    fake_run(tmp_path / "baseline-demo-preset", 0.80, 0.70, 100.0, 500.0)
    fake_run(tmp_path / "lr-3e-4", 0.85, None, 100.0, 500.0)
    table = study.ablations(tmp_path).splitlines()
    assert [row.split(" | ")[0] for row in table[2:]] == ["| random init (same ViT)", "| baseline (demo preset)",
                                                          "| lr 3e-4"]
    assert table[4].startswith("| lr 3e-4 | 85.0 | 85.0 | 85.0 | 85.0 | 0.0") and table[4].endswith("| 0.125 | 5.0 | 100 |")


def test_table_only_lists_unfinished_variants_without_running_them(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "run", lambda cmd: pytest.fail(f"--table-only started a run: {cmd}"))
    monkeypatch.setattr(study, "ABLATIONS", {"baseline (demo preset)": {}, "lr 3e-4": {"lr": "3e-4"}})
    fake_run(tmp_path / "lr-3e-4", 0.85, None, 100.0, 500.0)
    table = study.ablations(tmp_path, table_only=True).splitlines()
    assert table[2:4] == ["| random init (same ViT) | not run yet |", "| baseline (demo preset) | not run yet |"]
    assert table[4].startswith("| lr 3e-4 | 85.0")


def test_only_trains_the_named_variants_with_the_study_seed_and_rejects_unknown_ones(tmp_path, monkeypatch):
    started = []

    def fake_subprocess(cmd: list[str]) -> None:  # train, then evaluate, which leaves a finished run behind
        started.append(cmd[2])
        if cmd[2] == "minijepa.train":
            assert "--momentum=0.999" in cmd and "--seed=1" in cmd  # the row's knob, and the study's seed
        if cmd[2] == "minijepa.evaluate":
            fake_run(Path(cmd[3]), 0.9, None, 100.0, 500.0)

    monkeypatch.setattr(study, "run", fake_subprocess)
    monkeypatch.setattr(study, "ABLATIONS", {"baseline (demo preset)": {}, "lr 3e-4": {"lr": "3e-4"},
                                             "EMA 0.999 -> 1": {"momentum": "0.999"}})
    fake_run(tmp_path / "baseline-demo-preset", 0.80, 0.70, 100.0, 500.0)
    table = study.ablations(tmp_path, only={"ema-0.999-1"}, seed=1).splitlines()
    assert started == ["minijepa.train", "minijepa.evaluate"]  # one run: not the baseline (done), not lr (unlisted)
    assert table[4] == "| lr 3e-4 | not run yet |" and table[5].startswith("| EMA 0.999 -> 1 | 90.0")
    with pytest.raises(ValueError, match="unknown ablation"):
        study.ablations(tmp_path, only={"ema-0.99"})
    with pytest.raises(SystemExit, match="error: unknown ablation.*choose from"):
        study.main(["ablations", "--out", str(tmp_path), "--only", "ema-0.99"])


def test_compare_with_another_schedule_length_trains_in_its_own_folder(tmp_path, monkeypatch):
    trained = []

    def fake_subprocess(cmd: list[str]) -> None:
        if cmd[2] == "minijepa.train":
            trained.append(cmd)
        else:  # evaluate: leave a finished run behind
            fake_run(Path(cmd[3]), 0.9, 0.5 if "--no-baseline" not in cmd else None, 100.0, 500.0)

    monkeypatch.setattr(study, "run", fake_subprocess)
    study.main(["compare", "--out", str(tmp_path), "--seeds", "3", "--steps", "2400"])
    assert [c[c.index("--out") + 1] for c in trained] == [
        str(tmp_path / "compare-2400steps" / f"fashion-cpu-{t}-seed3") for t in ("latent", "pixels")]
    assert all({"--steps=2400", "--warmup-steps=240", "--seed=3"} <= set(c) for c in trained)
    table = (tmp_path / "compare-2400steps.md").read_text().splitlines()
    assert table[0].startswith("| fashion-cpu, 1 seed(s), 2400 steps | linear")
    assert table[2].startswith("| I-JEPA (latent targets) | 90.0") and table[4].startswith("| random init | 50.0")
