"""gpucheck: says so without a GPU, runs its whole plan on the CPU in a dry run, and names the step that failed."""
from __future__ import annotations

import json

import pytest
import torch

from minijepa import gpucheck
from minijepa.data import load_dataset


def test_without_a_gpu_it_says_so_and_exits_cleanly(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpucheck.main(["--out", str(tmp_path / "out")]) == 0
    assert "no CUDA GPU here" in capsys.readouterr().out and not (tmp_path / "out").exists()


def test_synthetic_cifar10_is_written_in_the_real_format(tmp_path):
    gpucheck.write_synthetic_cifar10(tmp_path, per_batch=6, n_test=4)
    train, test = (load_dataset("cifar10", split, root=tmp_path, download=False) for split in ("train", "test"))
    assert train.images.shape == (30, 3, 32, 32) and train.images.dtype == torch.uint8 and len(test) == 4
    assert train.classes == gpucheck.CIFAR10_CLASSES and set(train.labels.tolist()) <= set(range(10))


def test_dry_run_runs_every_step_on_the_cpu(tmp_path, capsys):
    """The same commands as on a GPU (benchmark, train, evaluate, torchrun, Ctrl-C + resume), tiny, on the CPU."""
    assert gpucheck.main(["--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpucheck.json").read_text())
    assert [(r["step"], r["status"]) for r in report["rows"]] == [(s, "ok") for s in gpucheck.STEPS]
    assert report["data"].startswith("synthetic") and "synthetic" in report["rows"][1]["setting"]
    rows = {r["step"]: r for r in report["rows"]}
    assert rows["bench"]["figures"]["img_per_s"] > 0 and rows["train"]["figures"]["amp"] == "off"
    assert 0 <= rows["evaluate"]["figures"]["linear"] <= 1 and rows["evaluate"]["figures"]["n_train"] == 500
    assert 0 < rows["resume"]["figures"]["cut"] < 60
    out = capsys.readouterr().out
    assert "all 5 checks passed" in out and "$ " in out  # the commands are printed


def test_a_failed_step_is_named_and_the_exit_status_is_not_zero(tmp_path, monkeypatch, capsys):
    def fails(*args):
        raise gpucheck.CheckFailed("exit status 1:\nerror: something broke")

    for name in ("check_bench", "check_ddp", "check_resume"):
        monkeypatch.setattr(gpucheck, name, lambda *args: ("fine", {}))
    monkeypatch.setattr(gpucheck, "check_train", fails)
    with pytest.raises(SystemExit, match="error: gpucheck failed at: train "):
        gpucheck.main(["--dry-run", "--out", str(tmp_path)])
    rows = {r["step"]: r["status"] for r in json.loads((tmp_path / "gpucheck.json").read_text())["rows"]}
    assert rows == dict(bench="ok", train="FAILED", evaluate="skipped (train failed)", ddp="ok", resume="ok")
    assert "error: something broke" in capsys.readouterr().err
