"""Read-outs measure what they claim, and the benchmark reports consistent figures."""
from __future__ import annotations

import json

import pytest
import torch

from minijepa.bench import main as bench
from minijepa.evaluate import evaluate_run, extract_features, knn_accuracy, linear_probe, low_shot_indices
from minijepa.train import CheckpointError, load_run, train
from test_train import tiny


def blobs(n: int, separation: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    centres = torch.randn(10, 16, generator=torch.Generator().manual_seed(99)) * separation
    return centres[y] + torch.randn(n, 16, generator=g), y


def test_probes_on_separable_and_random_features():
    xtr, ytr = blobs(500, 4.0, 0)
    xte, yte = blobs(200, 4.0, 1)
    assert linear_probe(xtr, ytr, xte, yte) > 0.95 and knn_accuracy(xtr, ytr, xte, yte) > 0.95
    xtr, ytr = blobs(500, 0.0, 0)  # no signal: chance level
    xte, yte = blobs(200, 0.0, 1)
    assert linear_probe(xtr, ytr, xte, yte) < 0.3 and knn_accuracy(xtr, ytr, xte, yte) < 0.3
    assert knn_accuracy(xtr, ytr, xtr, ytr, k=1) == 1.0


def test_low_shot_indices():
    labels = torch.arange(1000) % 10
    ten = low_shot_indices(labels, per_class=10, seed=0)
    assert labels[ten].bincount().tolist() == [10] * 10 and len(ten.unique()) == 100
    assert torch.equal(ten, low_shot_indices(labels, per_class=10, seed=0))
    assert not torch.equal(ten, low_shot_indices(labels, per_class=10, seed=1))
    assert labels[low_shot_indices(labels, fraction=0.01)].bincount().tolist() == [1] * 10


def test_evaluate_run_end_to_end(tmp_path):
    train(tiny(steps=4), tmp_path, progress=False)
    result = evaluate_run(tmp_path)
    saved = json.loads((tmp_path / "eval.json").read_text())
    for name in ("ijepa", "random_init"):
        assert all(0 <= saved[name][m] <= 1 for m in ("linear", "knn", "linear_10_per_class", "linear_1pct"))
        assert saved[name]["n_train"] == 6000 and saved[name]["n_test"] == 1000
    assert result["ijepa"]["linear"] > 0.3  # far above chance (0.1) even for an untrained ViT on Fashion-MNIST
    assert (tmp_path / "eval.png").stat().st_size > 0
    _, model, ckpt = load_run(tmp_path)
    imgs = torch.randint(0, 256, (9, 1, 28, 28), dtype=torch.uint8)
    one = extract_features(model.target_encoder, imgs, ckpt["norm"]["mean"], ckpt["norm"]["std"], batch_size=4)
    two = extract_features(model.target_encoder, imgs, ckpt["norm"]["mean"], ckpt["norm"]["std"], layers=2)
    assert one.shape == (9, 32) and two.shape == (9, 2 * 32) and torch.allclose(two[:, 32:], one, atol=1e-5)
    with pytest.raises(ValueError, match="last 4 layers of a 2-block"):
        extract_features(model.target_encoder, imgs, ckpt["norm"]["mean"], ckpt["norm"]["std"], layers=4)
    assert torch.allclose(one, extract_features(model.target_encoder, imgs, ckpt["norm"]["mean"],
                                                ckpt["norm"]["std"], batch_size=64), atol=1e-5)
    with pytest.raises(CheckpointError, match="train first"):
        evaluate_run(tmp_path / "missing")


def test_bench_reports_consistent_figures(capsys):
    r = bench(["--steps", "2", "--warmup", "1", "--batch-size", "8"])
    assert r["img_per_s"] > 0 and r["gflop_per_step"] > 1
    assert r["img_per_s"] == pytest.approx(8 / (r["ms_per_step"] / 1000), rel=1e-6)
    assert r["tflop_per_s"] == pytest.approx(r["gflop_per_step"] / r["ms_per_step"], rel=1e-6)
    assert "img_per_s=" in capsys.readouterr().out
