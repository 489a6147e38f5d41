"""Read-outs measure what they claim, features are pooled as the paper says, and a run evaluates end to end."""
from __future__ import annotations

import json

import pytest
import torch

from minijepa.data import load_dataset
from minijepa.data import normalise
from minijepa.evaluate import (METRICS, evaluate_run, extract_features, knn_accuracy, linear_probe,
                               low_shot_indices, main, noise_margin, pixel_features, raw_pixel_baseline,
                               spread_margin)
from minijepa.train import CheckpointError, Config, train
from minijepa.vit import ViT


def blobs(n: int, separation: float, seed: int, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """n points of 10 classes (balanced) around fixed Gaussian centres `separation` apart in scale."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    centres = torch.randn(10, dim, generator=torch.Generator().manual_seed(99)) * separation
    return centres[y] + torch.randn(n, dim, generator=g), y


def test_probes_separate_blobs():
    xtr, ytr = blobs(500, 4.0, 0)
    xte, yte = blobs(200, 4.0, 1)
    assert linear_probe(xtr, ytr, xte, yte) > 0.95
    assert knn_accuracy(xtr, ytr, xte, yte) > 0.95
    assert knn_accuracy(xtr, ytr, xtr, ytr, k=1) == 1.0  # each point is its own nearest neighbour
    assert knn_accuracy(xtr, ytr, xtr, ytr, k=1, center=False) == 1.0


def test_probes_are_at_chance_on_random_labels():
    xtr, _ = blobs(1000, 4.0, 0)
    xte, _ = blobs(500, 4.0, 1)
    g = torch.Generator().manual_seed(0)
    ytr, yte = torch.randint(0, 10, (1000,), generator=g), torch.randint(0, 10, (500,), generator=g)
    assert linear_probe(xtr, ytr, xte, yte) < 0.3
    assert knn_accuracy(xtr, ytr, xte, yte) < 0.3


def test_linear_probe_is_deterministic_and_fits_ill_conditioned_features():
    xtr, ytr = blobs(2000, 1.0, 0)
    xte, yte = blobs(500, 1.0, 1)
    good = linear_probe(xtr, ytr, xte, yte, seed=3)
    assert good == linear_probe(xtr, ytr, xte, yte, seed=3) and good > 0.5
    # like pooled ViT features: one huge shared direction, the class signal in directions 100x smaller, all mixed;
    # per-dimension standardisation alone gets ~0.2 here
    g = torch.Generator().manual_seed(1)
    mix = torch.linalg.qr(torch.randn(16, 16, generator=g))[0]  # (16, 16) rotation
    xtr_bad, xte_bad = ((1e-2 * x + 10 * torch.randn(len(x), 1, generator=g)) @ mix for x in (xtr, xte))
    assert linear_probe(xtr_bad, ytr, xte_bad, yte) == pytest.approx(good, abs=0.03)
    sub = low_shot_indices(ytr, per_class=10)  # low-shot, whitening statistics from all the (unlabeled) features
    assert linear_probe(xtr_bad[sub], ytr[sub], xte_bad, yte, unlabeled_x=xtr_bad) > 0.5


def test_low_shot_indices():
    labels = torch.cat([torch.arange(1000) % 10, torch.full((50,), -1), torch.full((30,), 10)])  # class 10 small
    ten = low_shot_indices(labels, per_class=10, seed=0)
    assert labels[ten].bincount().tolist() == [10] * 11
    assert len(ten.unique()) == len(ten) and ten.min() >= 0 and ten.max() < len(labels)  # valid, no repeats
    assert torch.equal(ten, low_shot_indices(labels, per_class=10, seed=0))
    assert not torch.equal(ten, low_shot_indices(labels, per_class=10, seed=1))
    pct = low_shot_indices(labels, fraction=0.01, seed=0)
    assert labels[pct].bincount().tolist() == [1] * 11  # round(0.01 * 100) = 1, round(0.01 * 30) = 0 -> 1
    assert labels[low_shot_indices(labels, fraction=0.1)].bincount().tolist() == [10] * 10 + [3]
    assert (labels[pct] >= 0).all()  # never an unlabeled image
    with pytest.raises(ValueError, match="fewer than per_class=40"):
        low_shot_indices(labels, per_class=40)
    with pytest.raises(ValueError, match="exactly one"):
        low_shot_indices(labels, per_class=1, fraction=0.5)


def test_extract_features():
    torch.manual_seed(0)
    encoder = ViT(16, 4, in_chans=1, dim=32, depth=4, heads=2)
    images = torch.randint(0, 256, (20, 1, 16, 16), dtype=torch.uint8)
    mean, std = torch.tensor([0.3]), torch.tensor([0.2])
    one = extract_features(encoder, images, mean, std, batch_size=7)
    assert one.shape == (20, 32) and one.dtype == torch.float32
    expected = encoder((images.float() / 255 - 0.3) / 0.2).mean(1)  # (N, D): pooled last layer, normalised input
    assert torch.allclose(one, expected, atol=1e-5)
    assert torch.allclose(one, extract_features(encoder, images, mean, std, batch_size=64), atol=1e-5)
    four = extract_features(encoder, images, mean, std, layers=4, batch_size=7)
    assert four.shape == (20, 4 * 32)
    assert torch.allclose(four, extract_features(encoder, images, mean, std, layers=4, batch_size=64), atol=1e-5)
    assert torch.allclose(four[:, -32:], one, atol=1e-5)  # the last of the 4 is the last layer
    assert encoder.training  # eval mode only while extracting: the caller's mode is restored
    big = extract_features(encoder, torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8), mean, std)
    assert big.shape == (3, 32)  # other sizes are resized to the encoder's
    with pytest.raises(ValueError, match="last 5 layers of a 4-block"):
        extract_features(encoder, images, mean, std, layers=5)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    cfg = Config(data="embedded", dim=32, depth=2, heads=2, predictor_dim=16, predictor_depth=1, batch_size=64,
                 steps=4, warmup_steps=1, log_every=2, ckpt_every=4)
    train(cfg, run, progress=False)
    return run


def test_evaluate_run_end_to_end(tiny_run):
    result = evaluate_run(tiny_run)
    saved = json.loads((tiny_run / "eval.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert set(saved) == {"run", "step", "config", "protocol", "ijepa", "random_init", "raw_pixels"}
    assert saved["step"] == 4 and saved["config"]["dim"] == 32 and saved["protocol"]["layers"] == 1
    n_train, n_test = len(load_dataset("embedded", "train")), len(load_dataset("embedded", "test"))
    for name in ("ijepa", "random_init"):
        assert all(0 <= saved[name][m] <= 1 for m in METRICS)
        assert saved[name]["linear"] > 0.3  # far above chance (0.1) even for a barely trained 2-block ViT
        assert (saved[name]["feature_dim"], saved[name]["n_train"], saved[name]["n_test"]) == (32, n_train, n_test)
    assert (tiny_run / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["raw_pixels"]["feature_dim"] == 28 * 28  # the raw-pixel baseline: every pixel a feature
    assert (saved["ijepa"]["n_10_per_class"], saved["ijepa"]["n_1pct"]) == (100, n_train // 100)


def test_raw_pixel_baseline_is_a_direct_computation_on_normalised_pixels(tiny_run):
    """The eval.json row equals the read-outs computed by hand on the flattened, normalised images."""
    saved = json.loads((tiny_run / "eval.json").read_text())["raw_pixels"]
    train_split, test_split = load_dataset("embedded", "train"), load_dataset("embedded", "test")
    mean, std = train_split.mean_std()
    tr, te = (normalise(d.images, mean, std).flatten(1) for d in (train_split, test_split))
    assert torch.equal(pixel_features(train_split.images, mean, std), tr)
    assert saved["knn"] == knn_accuracy(tr, train_split.labels, te, test_split.labels)
    assert saved["linear"] == linear_probe(tr, train_split.labels, te, test_split.labels)
    assert raw_pixel_baseline("embedded") == saved  # the same numbers without a run
    big = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8)
    assert pixel_features(big, torch.zeros(3), torch.ones(3)).shape == (2, 3 * 32 * 32)  # large images: pooled


def test_multi_layer_readout_is_written_beside_the_last_layer_one(tiny_run):
    evaluate_run(tiny_run, baseline=False)
    last_layer = (tiny_run / "eval.json").read_text()
    evaluate_run(tiny_run, layers=2, baseline=False)
    assert (tiny_run / "eval.json").read_text() == last_layer  # not overwritten
    saved = json.loads((tiny_run / "eval-2layers.json").read_text())
    assert saved["protocol"]["layers"] == 2 and saved["ijepa"]["feature_dim"] == 2 * 32  # two blocks concatenated
    assert (tiny_run / "eval-2layers.png").exists()


def test_cli_prints_table_and_rejects_bad_options(tiny_run, capsys):
    main([str(tiny_run), "--no-baseline", "--batch-size", "1000"])
    out = capsys.readouterr().out
    assert "I-JEPA" in out and "random init" not in out and all(m in out for m in METRICS)
    assert "random_init" not in json.loads((tiny_run / "eval.json").read_text())
    with pytest.raises(SystemExit, match="error: cannot pool the last 4 layers: the encoder has only 2 blocks"):
        main([str(tiny_run), "--layers", "4"])


def test_missing_checkpoint_says_how_to_fix_it(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*train first"):
        evaluate_run(tmp_path / "missing")
    with pytest.raises(SystemExit, match="error: no checkpoint at"):
        main([str(tmp_path / "missing")])


def test_noise_margin_is_two_binomial_standard_errors():
    """80 % on 10,000 test images: s.e. = sqrt(0.8 * 0.2 / 10000) = 0.004, so the margin is 0.008, whichever
    accuracy comes first; four times the test images halve it."""
    assert noise_margin(0.8, 0.7, 10_000) == pytest.approx(0.008)
    assert noise_margin(0.7, 0.8, 10_000) == noise_margin(0.8, 0.7, 10_000)
    assert noise_margin(0.8, 0.8, 40_000) == pytest.approx(0.004)
    assert noise_margin(1.0, 1.0, 100) == 0.0


def test_spread_margin_is_the_larger_of_twice_the_seed_spread_and_the_test_noise():
    assert spread_margin(0.8, 0.7, 0.0, 0.0, 10_000) == noise_margin(0.8, 0.7, 10_000)  # one seed: test noise only
    assert spread_margin(0.8, 0.7, 0.03, 0.04, 10_000) == pytest.approx(0.1)  # 2 * sqrt(0.03^2 + 0.04^2)
