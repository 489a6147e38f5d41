"""Exported models: small, safe to load, faithful to the run, and trained from their recipe when missing."""
from __future__ import annotations

import pytest
import torch
from test_train import TINY, tiny

from minijepa import pretrained
from minijepa.train import CheckpointError, load_run, train


def test_export_roundtrip_keeps_the_target_encoder_and_predictor(tmp_path):
    train(tiny(steps=5), tmp_path / "run", progress=False)
    path = pretrained.export(tmp_path / "run", "tiny", root=tmp_path / "out")
    cfg, model, info = pretrained.load_pretrained("tiny", root=tmp_path / "out", train_if_missing=False)
    _, trained, ckpt = load_run(tmp_path / "run")
    assert cfg.dim == TINY["dim"] and info["step"] == 5 and [r["step"] for r in info["metrics"]] == list(range(5))
    for part in ("target_encoder", "predictor"):
        for (k, a), b in zip(getattr(trained, part).state_dict().items(), getattr(model, part).state_dict().values()):
            torch.testing.assert_close(b, a, atol=2e-3, rtol=1e-3, msg=f"{part}.{k}")  # float16 rounding only
    for a, b in zip(model.target_encoder.parameters(), model.context_encoder.parameters()):
        assert torch.equal(a, b)  # both encoders carry the target encoder's weights
    assert torch.equal(info["norm"]["mean"], ckpt["norm"]["mean"])
    assert "optimizer" not in torch.load(path, weights_only=True)  # only what the notebooks need
    assert path.stat().st_size < 0.6 * (tmp_path / "run" / "checkpoint.pt").stat().st_size


def test_missing_model_says_how_to_make_it(tmp_path):
    with pytest.raises(CheckpointError, match="python -m minijepa.pretrained make nothing"):
        pretrained.load_pretrained("nothing", root=tmp_path, train_if_missing=False)


def test_a_training_checkpoint_is_not_mistaken_for_an_export(tmp_path):
    train(tiny(steps=2), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="not an exported model"):
        pretrained.load_pretrained("checkpoint", root=tmp_path, train_if_missing=False)


def test_missing_model_is_trained_from_its_recipe(tmp_path, monkeypatch):
    monkeypatch.setitem(pretrained.RECIPES, "tiny", dict(preset="demo", **TINY, steps=3))
    cfg, model, info = pretrained.load_pretrained("tiny", root=tmp_path / "out", runs=tmp_path / "runs")
    assert (tmp_path / "runs" / "tiny" / "checkpoint.pt").is_file() and (tmp_path / "out" / "tiny.pt").is_file()
    assert info["step"] == 3 and cfg.dim == TINY["dim"]


@pytest.mark.parametrize("name", sorted(pretrained.RECIPES))
def test_shipped_models_match_their_recipe(name):
    """The files in data/pretrained were trained by their recipe, to the end."""
    recipe = dict(pretrained.RECIPES[name])
    cfg, model, info = pretrained.load_pretrained(name, train_if_missing=False)
    expected = pretrained.preset_config(recipe.pop("preset"), **recipe)
    assert cfg == expected and info["step"] == cfg.steps and len(info["metrics"]) == cfg.steps
    x = torch.randn(2, 1, cfg.img_size, cfg.img_size)
    assert torch.isfinite(model.target_encoder(x)).all()
