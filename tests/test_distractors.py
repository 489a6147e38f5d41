"""The distractor dial adds exactly the detail it promises, replays it on resume, and refuses bad settings."""
from __future__ import annotations

import json
import signal

import pytest
import torch
from test_train import tiny

from minijepa import train as train_module
from minijepa.data import load_dataset, to_unit
from minijepa.distractors import OPAQUE_AT, Distractor, backgrounds, corrupt_images
from minijepa.evaluate import METRICS, corrupted_splits, evaluate_run
from minijepa.train import Config, TrainingInterrupted, load_checkpoint, train


def interrupted_and_resumed(cfg: Config, out, at: int, monkeypatch) -> dict:
    """Train cfg with a Ctrl-C (SIGINT) arriving during step `at`, resume it to the end: the final weights."""
    real = train_module.step_generator

    def ctrl_c_at(seed: int, step: int, rank: int = 0) -> torch.Generator:
        if step == at:
            signal.raise_signal(signal.SIGINT)
        return real(seed, step, rank)

    monkeypatch.setattr(train_module, "step_generator", ctrl_c_at)
    with pytest.raises(TrainingInterrupted):
        train(cfg, out, progress=False)
    monkeypatch.setattr(train_module, "step_generator", real)
    assert load_checkpoint(out / "checkpoint.pt")["step"] == at + 1  # saved right after the interrupted step
    train(cfg, out, resume=True, progress=False)
    return load_checkpoint(out / "checkpoint.pt")["model"]


def garments(n: int = 64) -> torch.Tensor:
    return to_unit(load_dataset("embedded", "test").images[:n])  # (n, 1, 28, 28) in [0, 1]


def test_parse_reads_specs_and_refuses_bad_ones():
    assert Distractor.parse("none") is None and Distractor.parse("") is None
    assert Distractor.parse("noise:0.3") == Distractor("noise", 0.3)
    assert str(Distractor.parse("clutter:1")) == "clutter:1"
    for spec, why in [("blur:0.3", "KIND:STRENGTH"), ("noise", "KIND:STRENGTH"), ("noise:lots", "not a number"),
                      ("noise:-0.1", r"must be in \[0, 1"), ("clutter:3", r"must be in \[0, 1"),
                      ("noise:nan", r"must be in \[0, 1")]:
        with pytest.raises(ValueError, match=why):
            Distractor.parse(spec)


@pytest.mark.parametrize("strength", [0.1, 0.4])
def test_noise_has_the_requested_std_and_is_fresh_each_draw(strength):
    x = garments()
    g = torch.Generator().manual_seed(0)
    a, b = Distractor("noise", strength)(x, g), Distractor("noise", strength)(x, g)
    assert abs((a - x).std().item() - strength) < 0.02 * strength  # 50,000 values: the std is measured tightly
    assert abs((a - x).mean().item()) < 0.01
    assert not torch.equal(a, b)  # the next draw of the same generator: new noise
    again = Distractor("noise", strength)(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, again)  # same generator state, same noise


def test_clutter_keeps_the_garment_and_fills_the_background():
    x = garments()
    y = Distractor("clutter", 0.8)(x, torch.Generator().manual_seed(0))
    opaque, empty = x >= OPAQUE_AT, x == 0
    assert torch.equal(y[opaque], x[opaque])  # the garment is drawn over the background
    assert y[empty].min() >= 0 and y[empty].max() <= 0.8 + 1e-6  # background contrast = the strength
    assert y[empty].std() > 0.1  # a textured background, not a flat one
    per_image = torch.stack([y[i][empty[i]].mean() for i in range(len(x))])
    assert per_image.std() > 0.02  # each image gets its own crop
    assert torch.equal(Distractor("clutter", 0.0)(x, torch.Generator().manual_seed(0)), x)  # strength 0: clean
    weak = Distractor("clutter", 0.4)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close((weak - x)[empty], 0.5 * (y - x)[empty])  # contrast scales linearly
    assert backgrounds(1).shape[1] == 1 and backgrounds(3).shape[1] == 3


def test_corrupted_evaluation_splits_are_fixed_and_keep_their_labels():
    data = load_dataset("embedded", "test")
    d = Distractor("noise", 0.2)
    a, b = corrupt_images(data.images[:100], d, "test"), corrupt_images(data.images[:100], d, "test")
    assert torch.equal(a, b)  # a fixed seed: every run is read out on the same images
    assert not torch.equal(a, corrupt_images(data.images[:100], d, "train"))  # train and test differ
    train_split, test_split = corrupted_splits((data, data), d)
    assert torch.equal(test_split.labels, data.labels) and test_split.images.dtype == torch.float32


def test_training_replays_the_distractor_exactly_on_resume(tmp_path, monkeypatch):
    straight = train(tiny(steps=6, distractor="noise:0.3"), tmp_path / "a", progress=False).state_dict()
    resumed = interrupted_and_resumed(tiny(steps=6, distractor="noise:0.3"), tmp_path / "b", 2, monkeypatch)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    clean = train(tiny(steps=6), tmp_path / "c", progress=False).state_dict()
    assert not all(torch.equal(straight[k], clean[k]) for k in clean)  # the noise did change training
    zero = train(tiny(steps=6, distractor="noise:0"), tmp_path / "d", progress=False).state_dict()
    assert all(torch.equal(zero[k], clean[k]) for k in clean)  # drawn after crops and masks: those stay the same
    assert json.loads((tmp_path / "a" / "config.json").read_text())["distractor"] == "noise:0.3"


def test_bad_distractor_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="KIND:STRENGTH"):
        train(tiny(steps=2, distractor="fog:0.5"), tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_distractor_run_is_read_out_on_corrupted_and_clean_images(tmp_path):
    train(tiny(steps=2, distractor="clutter:0.5"), tmp_path, progress=False)
    result = evaluate_run(tmp_path)
    assert result["protocol"]["distractor"]["spec"] == "clutter:0.5"
    for part in (result, result["clean"]):
        assert {"ijepa", "random_init", "raw_pixels"} <= set(part)
        assert all(0 <= part[name][m] <= 1 for name in ("ijepa", "random_init", "raw_pixels") for m in METRICS)
    assert result["raw_pixels"]["knn"] != result["clean"]["raw_pixels"]["knn"]  # the clutter reached the read-out
