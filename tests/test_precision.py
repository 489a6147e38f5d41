"""Mixed precision fits the device: the auto rule, autocast, fp16 loss scaling, its skipped steps, and resume."""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import signal

import pytest
import torch
from test_train import tiny

import minijepa.train as train_module
from minijepa.evaluate import extract_features
from minijepa.device import make_scaler, pick_device, resolve_amp
from minijepa.train import (Config, TrainingDiverged, TrainingInterrupted, build_masker, build_model, config_from_dict,
                            load_checkpoint, step_generator, train, train_step)

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


def fake_card(monkeypatch, native_bf16: bool, name: str = "Tesla T4") -> None:
    """Pretend a CUDA card is there. Like torch, it reports bf16 as supported when emulation counts."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or
                        native_bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


def test_auto_picks_bf16_on_cards_with_native_bf16_else_fp16(monkeypatch):
    fake_card(monkeypatch, native_bf16=True, name="NVIDIA A100-SXM4-40GB")
    assert resolve_amp("auto", CUDA) == "bf16" and resolve_amp("bf16", CUDA) == "bf16"
    fake_card(monkeypatch, native_bf16=False)  # T4 / V100: bf16 only emulated
    assert resolve_amp("auto", CUDA) == "fp16" and resolve_amp("fp16", CUDA) == "fp16"
    with pytest.raises(ValueError, match="Tesla T4 has no native bf16.*--amp fp16"):
        resolve_amp("bf16", CUDA)
    assert resolve_amp("off", CUDA) == "off"


def test_auto_is_float32_on_cpu_and_mps():
    assert resolve_amp("auto", CPU) == "off" and resolve_amp("auto", MPS) == "off"
    assert resolve_amp("bf16", CPU) == "bf16" and resolve_amp("fp16", CPU) == "fp16"  # asked for: CPU autocast
    with pytest.raises(ValueError, match="not supported on MPS.*--amp off"):
        resolve_amp("fp16", MPS)
    with pytest.raises(ValueError, match="one of auto, bf16, fp16, off"):
        resolve_amp("true", CPU)
    assert make_scaler("fp16", CPU) is not None and make_scaler("bf16", CPU) is None and make_scaler("off", CPU) is None


def test_a_device_this_machine_lacks_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda'.*use --device cpu"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="MPS .* not available"):
        pick_device("mps")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        pick_device("gpu")
    assert pick_device("auto") == CPU


def test_configs_saved_before_the_precision_modes_still_load():
    """Checkpoints and run records stored amp as a bool: true (bf16 on CUDA, nothing elsewhere) is now auto."""
    old = dataclasses.asdict(Config())
    assert config_from_dict({**old, "amp": True}).amp == "auto"
    assert config_from_dict({**old, "amp": False}).amp == "off"


def tiny_step_parts(cfg: Config):
    model = build_model(cfg)
    masker = build_masker(cfg, model.context_encoder.grid_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(8, 1, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(0))
    context, targets = masker.sample(8, step_generator(0, 0))
    return model, optimizer, images, context, targets


@pytest.mark.parametrize("amp, dtype", [("off", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_the_step_runs_under_autocast_on_cpu(amp, dtype):
    model, optimizer, images, context, targets = tiny_step_parts(tiny())
    seen = []
    model.predictor.head.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    before = [p.detach().clone() for p in model.predictor.parameters()]
    loss, grad_norm = train_step(model, optimizer, images, context, targets, 0.996, amp=amp,
                                 scaler=make_scaler(amp, CPU))
    assert seen == [dtype]  # the predictor's output, inside the forward pass
    assert torch.isfinite(loss) and torch.isfinite(grad_norm) and grad_norm > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast never changes the weights' dtype
    assert not all(torch.equal(a, b) for a, b in zip(before, model.predictor.parameters()))  # a real update


def test_fp16_step_with_overflowing_gradients_is_skipped():
    model, optimizer, images, context, targets = tiny_step_parts(tiny())
    scaler = make_scaler("fp16", CPU)
    model.predictor.head.bias.register_hook(lambda g: g * math.inf)  # as if the scaled gradients overflowed
    before = [p.detach().clone() for p in model.context_encoder.parameters()]
    loss, grad_norm = train_step(model, optimizer, images, context, targets, 0.996, amp="fp16", scaler=scaler)
    assert torch.isfinite(loss) and not torch.isfinite(grad_norm)
    assert all(torch.equal(a, b) for a, b in zip(before, model.context_encoder.parameters()))  # no AdamW step
    assert scaler.get_scale() == 2.0 ** 15  # halved from 2^16, to try again


def poisoned(bad_steps: set[int]):
    """build_model, with the predictor's gradient made infinite at the given steps (backward calls, from 0)."""
    def build(cfg: Config):
        model = build_model(cfg)
        calls = itertools.count()
        model.predictor.head.bias.register_hook(lambda g: g * math.inf if next(calls) in bad_steps else g)
        return model
    return build


def test_a_skipped_fp16_step_is_not_divergence_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "build_model", poisoned({2}))
    train(tiny(steps=6, amp="fp16"), tmp_path, progress=False)  # raises TrainingDiverged if mistaken for divergence
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("skipped")] == [2] and all(math.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["amp"] == "fp16" and rows[-1]["loss_scale"] == 2.0 ** 15
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["amp"] == "fp16" and ckpt["scaler"]["scale"] == 2.0 ** 15
    assert json.loads((tmp_path / "config.json").read_text())["amp"] == "fp16"


def test_fp16_gradients_that_overflow_at_every_scale_are_divergence(tmp_path, monkeypatch):
    """Each skip halves the loss scale from 2^16; still overflowing below a scale of 1 means the run diverged."""
    monkeypatch.setattr(train_module, "build_model", poisoned(set(range(100))))
    with pytest.raises(TrainingDiverged, match="overflow even with the loss scale at 0.5"):
        train(tiny(steps=20, amp="fp16", log_every=1), tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 15  # saved before: nothing is lost


def test_float32_run_records_its_precision(tmp_path):
    train(tiny(steps=5), tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["amp"] == "off" and "loss_scale" not in rows[-1]  # auto on the CPU: float32
    assert "scaler" not in load_checkpoint(tmp_path / "checkpoint.pt")


def test_fp16_resume_restores_the_loss_scale(tmp_path, monkeypatch):
    """Interrupted after a skipped step, resumed: the same weights and loss-scaler state as an uninterrupted run."""
    cfg = tiny(steps=8, amp="fp16", ckpt_every=100)
    monkeypatch.setattr(train_module, "build_model", poisoned({1}))
    full = train(cfg, tmp_path / "full", progress=False).state_dict()
    steps_done = itertools.count(1)

    def interrupt_after_4(*args, **kwargs):
        out = train_step(*args, **kwargs)
        if next(steps_done) == 4:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the loop saves after this step and stops
        return out

    monkeypatch.setattr(train_module, "train_step", interrupt_after_4)
    with pytest.raises(TrainingInterrupted):
        train(cfg, tmp_path / "cut", progress=False)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["step"] == 4
    monkeypatch.setattr(train_module, "train_step", train_step)
    monkeypatch.setattr(train_module, "build_model", build_model)  # step 1 is behind us: no more overflow
    train(cfg, tmp_path / "cut", resume=True, progress=False)
    a, b = (load_checkpoint(tmp_path / run / "checkpoint.pt") for run in ("full", "cut"))
    assert a["scaler"] == b["scaler"] and a["scaler"]["scale"] == 2.0 ** 15  # not a fresh 2^16 scaler
    assert all(torch.equal(full[k], b["model"][k]) for k in full)


def test_feature_extraction_in_bf16_matches_float32():
    encoder = build_model(tiny()).target_encoder
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    mean, std = torch.tensor([0.3]), torch.tensor([0.3])
    exact = extract_features(encoder, images, mean, std)
    half = extract_features(encoder, images, mean, std, amp="bf16")
    assert half.dtype == torch.float32 and not torch.equal(half, exact)  # computed in bf16, returned as float32
    torch.testing.assert_close(half, exact, atol=0.05, rtol=0.05)
