"""Read-outs measure what they claim, features are pooled as the paper says, and a run evaluates end to end."""
from __future__ import annotations

import inspect
import json

import pytest
import torch

from minijepa.data import ImageDataset, center_resize, load_dataset, normalise, prepare_images
from minijepa.evaluate import (EXTRA_METRICS, METRICS, evaluate_run, extract_features, main, markdown_table,
                               pixel_features, raw_pixel_baseline, readouts)
from minijepa.finetune import FINETUNE, finetune_accuracy, finetune_readout
from minijepa.probes import (LOW_SHOT, PROBE, centre_normalise, fit_probe, knn_accuracy, linear_probe, low_shot_draws,
                             low_shot_indices, noise_margin, spread_margin, stratified_folds, whitened_probe)
from minijepa.train import CheckpointError, Config, train
from minijepa.vit import ViT


def blobs(n: int, separation: float, seed: int, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """n points of 10 classes (balanced) around fixed Gaussian centres `separation` apart in scale."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    centres = torch.randn(10, dim, generator=torch.Generator().manual_seed(99)) * separation
    return centres[y] + torch.randn(n, dim, generator=g), y


def faint_signal(n: int, seed: int, nuisance_dims: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes on the corners of a square in 2 faint directions (std ~1), beside `nuisance_dims` loud directions
    (std 10) that carry no label: (n, 2 + nuisance_dims) features and (n,) labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    corners = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    signal = corners[y] + 0.3 * torch.randn(n, 2, generator=g)
    return torch.cat([signal, 10 * torch.randn(n, nuisance_dims, generator=g)], dim=1), y


def test_probes_separate_blobs():
    xtr, ytr = blobs(500, 4.0, 0)
    xte, yte = blobs(200, 4.0, 1)
    assert linear_probe(xtr, ytr, xte, yte)["accuracy"] > 0.95
    assert whitened_probe(xtr, ytr, xte, yte) > 0.95
    assert knn_accuracy(xtr, ytr, xte, yte) > 0.95
    assert knn_accuracy(xtr, ytr, xtr, ytr, k=1) == 1.0  # each point is its own nearest neighbour
    assert knn_accuracy(xtr, ytr, xtr, ytr, k=1, center=False) == 1.0


def test_probes_are_at_chance_on_random_labels():
    xtr, _ = blobs(1000, 4.0, 0)
    xte, _ = blobs(500, 4.0, 1)
    g = torch.Generator().manual_seed(0)
    ytr, yte = torch.randint(0, 10, (1000,), generator=g), torch.randint(0, 10, (500,), generator=g)
    assert linear_probe(xtr, ytr, xte, yte)["accuracy"] < 0.3
    assert whitened_probe(xtr, ytr, xte, yte) < 0.3
    assert knn_accuracy(xtr, ytr, xte, yte) < 0.3


def test_whitened_probe_is_blind_to_linear_maps_and_the_linear_probe_is_not():
    """The reason the whitened probe is only a diagnostic: it scores features z and z A alike for any invertible A,
    so it cannot see which directions carry the variance. The linear probe (centred, L2-normalised, cross-validated
    L2 penalty) reads a class signal in the loud directions easily and one hidden in faint directions hardly at
    all, with few labels, as the probes of MSN and DINO do."""
    xtr, ytr = faint_signal(40, 0)  # 10 labels per class
    xte, yte = faint_signal(400, 1)
    swap = torch.cat([torch.full((2,), 10.0), torch.full((10,), 0.1)])  # the signal loud, the nuisance faint
    g = torch.Generator().manual_seed(3)
    mix = torch.linalg.qr(torch.randn(12, 12, generator=g))[0] * torch.empty(12).uniform_(0.5, 2, generator=g)
    faint = linear_probe(xtr, ytr, xte, yte, folds=5)["accuracy"]
    loud = linear_probe(xtr * swap, ytr, xte * swap, yte, folds=5)["accuracy"]
    assert loud > 0.95 and faint < 0.6
    whitened = whitened_probe(xtr, ytr, xte, yte)
    assert whitened > 0.8  # what is decodable at all: the faint signal too
    assert whitened_probe(xtr * swap, ytr, xte * swap, yte) == pytest.approx(whitened, abs=0.01)
    assert whitened_probe(xtr @ mix, ytr, xte @ mix, yte) == pytest.approx(whitened, abs=0.01)


def test_whitened_probe_is_deterministic_and_fits_ill_conditioned_features():
    xtr, ytr = blobs(2000, 1.0, 0)
    xte, yte = blobs(500, 1.0, 1)
    good = whitened_probe(xtr, ytr, xte, yte, seed=3)
    assert good == whitened_probe(xtr, ytr, xte, yte, seed=3) and good > 0.5
    # like pooled ViT features: one huge shared direction, the class signal in directions 100x smaller, all mixed;
    # per-dimension standardisation alone gets ~0.2 here
    g = torch.Generator().manual_seed(1)
    mix = torch.linalg.qr(torch.randn(16, 16, generator=g))[0]  # (16, 16) rotation
    xtr_bad, xte_bad = ((1e-2 * x + 10 * torch.randn(len(x), 1, generator=g)) @ mix for x in (xtr, xte))
    assert whitened_probe(xtr_bad, ytr, xte_bad, yte) == pytest.approx(good, abs=0.03)
    sub = low_shot_indices(ytr, per_class=10)  # low-shot, whitening statistics from all the (unlabeled) features
    assert whitened_probe(xtr_bad[sub], ytr[sub], xte_bad, yte, unlabeled_x=xtr_bad) > 0.5


def test_linear_probe_is_deterministic_and_records_its_lambda():
    xtr, ytr = blobs(600, 1.0, 0)
    xte, yte = blobs(300, 1.0, 1)
    out = linear_probe(xtr, ytr, xte, yte, seed=2)
    assert out == linear_probe(xtr, ytr, xte, yte, seed=2) and out["accuracy"] > 0.5
    grid, cv = PROBE["lambda_grid"], out["cv_accuracy"]
    assert out["lambda"] in grid and len(cv) == len(grid)
    # the chosen lambda: the largest one within cv_tolerance of the best cross-validated accuracy
    near_best = [lam for lam, a in zip(grid, cv) if a >= max(cv) - PROBE["cv_tolerance"]]
    assert out["lambda"] == max(near_best)


def test_lambda_selection_never_sees_test_labels():
    """fit_probe, which picks lambda and fits the weights, takes no test data at all; with garbage test labels the
    chosen lambda, the cross-validation and the weights are the same, only the reported accuracy changes."""
    assert not any("test" in name for name in inspect.signature(fit_probe).parameters)
    xtr, ytr = blobs(300, 1.0, 0)
    xte, yte = blobs(200, 1.0, 1)
    garbage = yte[torch.randperm(len(yte), generator=torch.Generator().manual_seed(0))]
    honest, scrambled = linear_probe(xtr, ytr, xte, yte), linear_probe(xtr, ytr, xte, garbage)
    assert honest["lambda"] == scrambled["lambda"] and honest["cv_accuracy"] == scrambled["cv_accuracy"]
    assert honest["accuracy"] > scrambled["accuracy"] + 0.3
    prep = centre_normalise(xtr)  # what linear_probe does first
    a, b = fit_probe(prep(xtr), ytr, seed=0), fit_probe(prep(xtr), ytr, seed=0)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias) and a.lam == honest["lambda"]


def test_stratified_folds_keep_every_class_in_every_fold():
    labels = torch.arange(100) % 10  # 10 per class, like the 10-per-class probe
    fold = stratified_folds(labels, 5, seed=0)
    counts = torch.zeros(5, 10, dtype=torch.long).index_put_((fold, labels), torch.ones(100, dtype=torch.long),
                                                              accumulate=True)
    assert (counts == 2).all()  # 2 images of each class in each fold
    assert torch.equal(fold, stratified_folds(labels, 5, seed=0))
    assert not torch.equal(fold, stratified_folds(labels, 5, seed=1))


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


def test_low_shot_draws_are_reproducible_and_differ():
    labels = torch.arange(1000) % 10
    draws = low_shot_draws(labels, 3, seed=5, per_class=10)
    assert all(torch.equal(a, b) for a, b in zip(draws, low_shot_draws(labels, 3, seed=5, per_class=10)))
    assert all(torch.equal(d, low_shot_indices(labels, per_class=10, seed=5 + i)) for i, d in enumerate(draws))
    assert len({tuple(d.tolist()) for d in draws}) == 3  # three different label sets
    # read-outs: draw d of seed s is draw 0 of seed s + d (subset, folds and all); per-draw numbers are kept
    xtr, ytr = blobs(1000, 1.0, 0)
    xte, yte = blobs(300, 1.0, 1)
    r0, r1 = readouts(xtr, ytr, xte, yte, seed=0, draws=3), readouts(xtr, ytr, xte, yte, seed=1, draws=2)
    for m in ("linear_10_per_class", "knn_10_per_class", "linear_1pct", "knn_1pct", "linear_whitened_10_per_class"):
        d0, d1 = r0["details"][m], r1["details"][m]
        assert len(d0["draws"]) == 3 and d0["draws"][1:] == d1["draws"]
        assert r0[m] == pytest.approx(sum(d0["draws"]) / 3) and d0["std"] >= 0
    assert len(set(r0["details"]["linear_10_per_class"]["draws"])) > 1  # the draws differ
    assert r0["details"]["linear_10_per_class"]["lambda"][1:] == r1["details"]["linear_10_per_class"]["lambda"]
    assert r0 == readouts(xtr, ytr, xte, yte, seed=0, draws=3)  # reproducible
    assert (r0["n_10_per_class"], r0["n_1pct"], r0["finetune_1pct"]) == (100, 10, None)
    assert set(METRICS + EXTRA_METRICS) <= set(r0)


def test_prepare_images_is_what_extract_features_feeds_the_encoder():
    images = torch.randint(0, 256, (5, 1, 32, 32), dtype=torch.uint8)
    mean, std = torch.tensor([0.3]), torch.tensor([0.2])
    x = prepare_images(images, 16, mean, std)
    assert x.shape == (5, 1, 16, 16) and x.dtype == torch.float32
    assert torch.equal(x, normalise(center_resize(images, 16), mean, std))
    assert torch.equal(prepare_images(images, 32, mean, std), (images.float() / 255 - 0.3) / 0.2)


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


def shades(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n uint8 16 x 16 noisy images of 4 classes, each class its own grey level (crops and flips keep the class)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    noise = torch.randint(0, 40, (n, 1, 16, 16), generator=g)
    return (40 + 50 * y[:, None, None, None] + noise).to(torch.uint8), y


def test_finetune_runs_end_to_end_and_is_deterministic():
    torch.manual_seed(0)
    encoder = ViT(16, 4, in_chans=1, dim=32, depth=2, heads=2)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    (xtr, ytr), (xte, yte) = shades(40, 0), shades(40, 1)
    norm = dict(mean=torch.tensor([0.5]), std=torch.tensor([0.25]))
    recipe = dict(FINETUNE, epochs=6, batch_size=10, warmup_epochs=1)
    acc = finetune_accuracy(encoder, xtr, ytr, xte, yte, norm, recipe, seed=0)
    assert 0 <= acc <= 1 and acc > 0.5  # grey levels are easy: far above chance (0.25)
    assert acc == finetune_accuracy(encoder, xtr, ytr, xte, yte, norm, recipe, seed=0)  # deterministic
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())  # a copy was trained
    augmented = dict(recipe, crop_scale=(0.5, 1.0), hflip=True)  # random_resized_crop and flips, off by default
    acc = finetune_accuracy(encoder, xtr, ytr, xte, yte, norm, augmented, seed=1)
    assert 0 <= acc <= 1 and acc == finetune_accuracy(encoder, xtr, ytr, xte, yte, norm, augmented, seed=1)
    # the 1 % read-out: its draws are the first draws of the 1 % probe (same labelled images)
    train = ImageDataset(torch.cat([xtr] * 10), torch.cat([ytr] * 10), ["a", "b", "c", "d"], "shades")
    test = ImageDataset(xte, yte, ["a", "b", "c", "d"], "shades")
    out = finetune_readout(encoder, (train, test), norm, dict(recipe, draws=2), seed=0)
    assert len(out["draws"]) == 2 and out["n_labels"] == 4 and all(0 <= a <= 1 for a in out["draws"])
    assert out["seconds"] > 0
    assert out["mean"] == pytest.approx(sum(out["draws"]) / 2)


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
    protocol = saved["protocol"]
    assert protocol["linear"]["lambda_grid"] == list(PROBE["lambda_grid"])
    assert protocol["linear"]["features"].startswith("centred") and protocol["linear"]["cv_folds"] == PROBE["cv_folds"]
    assert protocol["low_shot"]["draws"] == LOW_SHOT["draws"] and protocol["finetune"]["epochs"] == FINETUNE["epochs"]
    assert protocol["linear_whitened"]["whitening"].startswith("PCA")
    assert protocol["threads"] == torch.get_num_threads() and protocol["torch"] == torch.__version__
    n_train, n_test = len(load_dataset("embedded", "train")), len(load_dataset("embedded", "test"))
    for name in ("ijepa", "random_init"):
        r = saved[name]
        assert all(0 <= r[m] <= 1 for m in METRICS + EXTRA_METRICS)
        assert r["linear"] > 0.3  # far above chance (0.1) even for a barely trained 2-block ViT
        assert (r["feature_dim"], r["n_train"], r["n_test"]) == (32, n_train, n_test)
        assert r["details"]["linear"]["lambda"] in PROBE["lambda_grid"]
        for m in ("linear_10_per_class", "linear_1pct"):
            assert len(r["details"][m]["draws"]) == len(r["details"][m]["lambda"]) == LOW_SHOT["draws"]
            assert r[m] == pytest.approx(r["details"][m]["mean"])
        ft = r["details"]["finetune_1pct"]
        assert r["finetune_1pct"] == ft["mean"] and len(ft["draws"]) == FINETUNE["draws"]
        assert ft["n_labels"] == r["n_1pct"]
    assert saved["raw_pixels"]["finetune_1pct"] is None  # nothing to fine-tune
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
    assert saved["linear"] == linear_probe(tr, train_split.labels, te, test_split.labels)["accuracy"]
    assert saved["linear_whitened"] == whitened_probe(tr, train_split.labels, te, test_split.labels)
    assert raw_pixel_baseline("embedded") == saved  # the same numbers without a run
    big = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8)
    assert pixel_features(big, torch.zeros(3), torch.ones(3)).shape == (2, 3 * 32 * 32)  # large images: pooled


def test_multi_layer_readout_is_written_beside_the_last_layer_one(tiny_run):
    evaluate_run(tiny_run, baseline=False, finetune=False, draws=1)
    last_layer = (tiny_run / "eval.json").read_text()
    evaluate_run(tiny_run, layers=2, baseline=False, finetune=False, draws=1)
    assert (tiny_run / "eval.json").read_text() == last_layer  # not overwritten
    saved = json.loads((tiny_run / "eval-2layers.json").read_text())
    assert saved["protocol"]["layers"] == 2 and saved["ijepa"]["feature_dim"] == 2 * 32  # two blocks concatenated
    assert (tiny_run / "eval-2layers.png").exists()


def test_cli_prints_table_and_rejects_bad_options(tiny_run, capsys):
    main([str(tiny_run), "--no-baseline", "--batch-size", "1000", "--no-finetune", "--draws", "2"])
    out = capsys.readouterr().out
    assert "I-JEPA" in out and "random init" not in out and all(m in out for m in METRICS + EXTRA_METRICS)
    saved = json.loads((tiny_run / "eval.json").read_text())
    assert "random_init" not in saved and saved["ijepa"]["finetune_1pct"] is None
    assert saved["protocol"]["finetune"] is None
    assert len(saved["ijepa"]["details"]["linear_1pct"]["draws"]) == 2
    with pytest.raises(SystemExit, match="error: cannot pool the last 4 layers: the encoder has only 2 blocks"):
        main([str(tiny_run), "--layers", "4"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([str(tiny_run), "--draws", "0"])
    assert "error: --draws must be >= 1, got 0" in capsys.readouterr().err


def test_cli_help_gives_each_option_a_meaning(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--raw-pixels", "--distractor", "--layers", "--device", "--amp", "--batch-size", "--k", "--seed",
                 "--draws", "--no-finetune", "--no-baseline"):
        assert flag in text
    assert "--layers {1,4}" in text and "1 % fine-tuning" in text


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


def test_markdown_table_puts_encoders_side_by_side_in_percent():
    a = {"linear": 0.8123, "knn": 0.5, "linear_10_per_class": 0.55, "finetune_1pct": None,
         "details": {"linear_10_per_class": {"mean": 0.55, "std": 0.0123, "draws": [0.54, 0.56]}}}
    b = {"linear": 0.7, "knn": 0.25, "linear_10_per_class": 0.4, "finetune_1pct": 0.6}
    table = markdown_table({"trained": a, "random": b}, ("linear", "linear_10_per_class", "finetune_1pct"))
    assert table.splitlines() == ["| read-out | trained | random |", "|---|---|---|",
                                  "| `linear` | 81.2 | 70.0 |", "| `linear_10_per_class` | 55.0 ± 1.2 | 40.0 |",
                                  "| `finetune_1pct` | n/a | 60.0 |"]
