"""torch.compile compiles once although mask lengths change every batch, has no graph break on the CUDA path, and a
broken compiler is a stated fallback, not a crash."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch._dynamo
from test_train import tiny
from torch._dynamo.utils import counters

from minijepa import schedules
from minijepa.device import compile_networks, compile_problem
from minijepa.train import Config, build_masker, build_model, step_generator, train, train_step

SMALL = dict(data="cifar10", img_size=24, patch_size=4, dim=32, depth=1, heads=2, predictor_dim=16, predictor_depth=1)


def small(**kw) -> Config:
    return Config(**{**dataclasses.asdict(Config()), **SMALL, **kw})


def test_a_broken_compiler_is_reported_in_one_line(monkeypatch):
    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\n  (30 lines of compiler output)")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    assert compile_problem(torch.device("cpu")) == "RuntimeError: InductorError: CppCompileError: C++ compile error"


def test_compile_on_cpu_trains_eagerly_and_says_so(tmp_path, capsys):
    train(tiny(steps=2, compile=True), tmp_path, progress=False)
    assert "note: training without torch.compile (it is used on CUDA only" in capsys.readouterr().err


def test_the_cuda_step_compiles_to_one_graph_per_network():
    """torch._dynamo.explain on meta tensors, which skip vit.check_index's range check as CUDA tensors do (on CPU
    tensors it needs the values, and breaks the graph): each compiled network is one graph."""
    model = build_model(small()).to("meta")
    context, targets = build_masker(small(), model.context_encoder.grid_size).sample(4, step_generator(0, 0))
    images, context, targets = torch.randn(4, 3, 24, 24, device="meta"), context.to("meta"), [
        t.to("meta") for t in targets]
    M = len(targets)
    tokens = torch.randn(M * 4, context.shape[1], 32, device="meta")  # the predictor's input (M*B, Kc, D)
    for name, fn, args in (("context encoder", model.context_encoder, (images, context)),
                           ("target encoder", model.target_encoder, (images,)),
                           ("predictor", model.predictor, (tokens, context.repeat(M, 1), torch.cat(targets)))):
        torch._dynamo.reset()
        explained = torch._dynamo.explain(fn)(*args)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), (name, explained.break_reasons)


def test_changing_mask_lengths_do_not_recompile():
    """20 steps whose context and target lengths change, with the CUDA path's compile settings (inductor,
    dynamic shapes) on the CPU. The first step compiles every graph (each network, the target encoder also without
    grad); no later step may add one. The compiled step computes the same loss as the eager one."""
    why = compile_problem(torch.device("cpu"))
    if why is not None:
        pytest.skip(f"torch.compile does not work here: {why}")
    torch._dynamo.reset()
    cfg = small()
    models = [build_model(cfg), None]
    models[1] = copy.deepcopy(models[0])
    compile_networks(models[0])
    masker = build_masker(cfg, models[0].context_encoder.grid_size)
    optimizers = [torch.optim.AdamW(schedules.param_groups(m.context_encoder, m.predictor), lr=1e-3) for m in models]
    images = torch.randn(5, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    graphs, lengths = [], set()
    for step in range(20):
        context, targets = masker.sample(5, step_generator(0, step))
        lengths.add((context.shape[1], targets[0].shape[1]))
        compiled, eager = (train_step(m, opt, images, context, targets, 0.996)[0] for m, opt in zip(models, optimizers))
        torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-5)
        graphs.append(counters["stats"]["unique_graphs"])
    assert len({k for k, _ in lengths}) >= 5 and len({k for _, k in lengths}) >= 2  # the lengths did change
    recompiled = graphs[-1] - graphs[0]
    assert recompiled == 0, f"{recompiled} graphs compiled after the first step, for lengths {sorted(lengths)}"
