"""The GPU path in one command: `python -m minijepa.gpucheck [--out DIR] [--only STEPS] [--dry-run]` (`make gpu-check`).

On a machine with a CUDA GPU it runs every CUDA path of the package, each as its own command (printed), on GPU 0,
and prints one table:
    bench     the training-step benchmark (bench.py), eager and compiled, at the `bench`, `cifar10-tiny` and
              `imagenette-small` shapes: images/s, MFU, peak memory
    train     200 steps of the `cifar10-tiny` preset (the card's precision, compiled) on CIFAR-10 if it is on disk,
              else on random images written in CIFAR-10's own file format (python pickles) to DIR/data, labelled
              "synthetic" in the table
    evaluate  the read-outs of that run (I-JEPA only, no baselines)
    ddp       the same preset under torchrun with one process (nccl)
    resume    Ctrl-C (SIGINT) during a run, then --resume to its end: every step's metrics exactly once
It writes the table and every figure to DIR/gpucheck.json, and exits with status 1 naming each step that failed
(evaluate is skipped if train failed; each command has a time limit). Without a CUDA GPU it says so and exits 0;
`--dry-run` runs the same commands on the CPU with tiny shapes and no compilation (tests/test_gpucheck.py does).
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .data import CIFAR, DatasetNotFoundError, load_dataset
from .train import ArgumentParser, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent  # the folder that holds this package: the commands import the same code
STEPS = ("bench", "train", "evaluate", "ddp", "resume")
TINY = dict(dim=32, depth=2, heads=2, predictor_dim=16, predictor_depth=1, batch_size=32, warmup_steps=2)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class CheckFailed(RuntimeError):
    """A step of the check failed; the message ends with the last lines of its command's output."""


@dataclass
class Row:
    step: str
    setting: str
    result: str = ""
    status: str = "ok"
    seconds: float = 0.0
    figures: dict | None = None


@dataclass
class Plan:
    """What to run: on the GPU, the real shapes and lengths; in a dry run, tiny ones on the CPU."""
    device: str
    benches: list[tuple[str, bool]]  # (bench preset, compiled)
    bench_args: list[str]
    model: list[str]  # overrides of the cifar10-tiny preset for train, ddp and resume
    model_name: str
    train_steps: int
    resume_steps: int
    timeout: float  # seconds per command

    @classmethod
    def make(cls, dry: bool) -> Plan:
        if dry:
            return cls("cpu", [("bench", False)], ["--batch-size", "8", "--steps", "2", "--warmup", "1"],
                       [a for k, v in TINY.items() for a in (f"--{k.replace('_', '-')}", str(v))] +
                       ["--compile", "false"], "cifar10-tiny, shrunk to a 2-block ViT, eager", train_steps=20,
                       resume_steps=60, timeout=300)
        return cls("cuda", [(p, c) for p in ("bench", "cifar10-tiny", "imagenette-small") for c in (False, True)],
                   ["--steps", "20", "--warmup", "5"], [], "cifar10-tiny, compiled", train_steps=200,
                   resume_steps=100, timeout=600)


# ------------------------------------------------------------------------------------------------------------ data
def write_synthetic_cifar10(root: str | Path, per_batch: int = 1000, n_test: int = 1000, seed: int = 0) -> Path:
    """Random images and labels in CIFAR-10's own on-disk format, as `load_dataset("cifar10", root=root)` reads it:
    root/cifar-10-batches-py/ with data_batch_1..5 (per_batch images each) and test_batch, python-2 pickles of
    {b"data": uint8 (n, 3072), b"labels": [...], ...}, and batches.meta with the class names. Returns the folder."""
    folder = Path(root) / CIFAR[10][0]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {b"batch_label": f"synthetic {name}".encode(), b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.permutation(np.arange(n) % 10).tolist(), b"filenames": [b"synthetic.png"] * n}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)  # the real files were written by python 2
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_cases_per_batch": per_batch,
                     b"num_vis": 3072}, f, protocol=2)
    return folder


def training_data(out: Path, dry: bool) -> tuple[dict[str, str], str]:
    """(environment for the commands, label): the real CIFAR-10 where `load_dataset` finds it on disk (never in a dry
    run), else synthetic files in out/data, which the commands then find through $MINIJEPA_DATA."""
    if not dry:
        try:
            load_dataset("cifar10", "test", download=False)
            return {}, "CIFAR-10"
        except DatasetNotFoundError:
            pass
    per_batch, n_test = (100, 200) if dry else (2000, 2000)
    write_synthetic_cifar10(out / "data", per_batch, n_test)
    return {"MINIJEPA_DATA": str(out / "data")}, f"synthetic: {5 * per_batch} random images in CIFAR-10's format"


# -------------------------------------------------------------------------------------------------------- commands
def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def command(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run `python -m ARGS`, printed first; a non-zero exit or a timeout is a CheckFailed with the output's end."""
    cmd = [sys.executable, "-m", *args]
    print("$ " + " ".join(cmd), flush=True)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise CheckFailed(f"no result after {timeout:.0f} s:\n{tail(e.stderr or '')}") from None
    if proc.returncode != 0:
        raise CheckFailed(f"exit status {proc.returncode}:\n{tail(proc.stderr + proc.stdout)}")
    return proc


def train_args(plan: Plan, out: Path, steps: int) -> list[str]:
    return ["minijepa.train", "--preset", "cifar10-tiny", "--device", plan.device, "--out", str(out), "--steps",
            str(steps), "--log-every", "10", "--no-progress", *plan.model]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def check_bench(plan: Plan, out: Path, env: dict, preset: str, compiled: bool) -> tuple[str, dict]:
    path = out / f"bench-{preset}-{'compiled' if compiled else 'eager'}.json"
    command(["minijepa.bench", "--preset", preset, "--device", plan.device, *plan.bench_args, "--json", str(path),
             *(["--compile"] if compiled else [])], env, plan.timeout)
    r = json.loads(path.read_text())
    if compiled and not r["compile"]:
        raise CheckFailed("torch.compile does not work here: the benchmark ran eagerly (see its note)")
    mfu = f", MFU {r['mfu']:.1%}" if "mfu" in r else ""
    return f"{r['img_per_s']:,.0f} img/s{mfu}, peak {r['peak_mem_mb'] / 1024:.2f} GB, {r['amp']}", r


def check_train(plan: Plan, out: Path, env: dict) -> tuple[str, dict]:
    command(train_args(plan, out / "train", plan.train_steps), env, plan.timeout)
    rows = metrics(out / "train")
    speed = [r["img_per_s"] for r in rows if "img_per_s" in r][1:] or [rows[-1]["img_per_s"]]  # after compiling
    figures = dict(first_loss=rows[0]["loss"], last_loss=rows[-1]["loss"], img_per_s=sum(speed) / len(speed),
                   amp=rows[-1]["amp"], peak_mem_mb=rows[-1]["peak_mem_mb"], skipped=sum("skipped" in r for r in rows))
    return (f"loss {figures['first_loss']:.3f} -> {figures['last_loss']:.3f}, {figures['img_per_s']:,.0f} img/s, "
            f"{figures['amp']}, {figures['skipped']} skipped"), figures


def check_evaluate(plan: Plan, out: Path, env: dict) -> tuple[str, dict]:
    command(["minijepa.evaluate", str(out / "train"), "--device", plan.device, "--no-baseline"], env, plan.timeout)
    r = json.loads((out / "train" / "eval.json").read_text())["ijepa"]
    return f"linear {r['linear']:.3f}, kNN {r['knn']:.3f} ({r['n_train']} / {r['n_test']} images)", r


def check_ddp(plan: Plan, out: Path, env: dict) -> tuple[str, dict]:
    steps = 20
    command(["torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
             *train_args(plan, out / "ddp", steps)], env, plan.timeout)
    done = load_checkpoint(out / "ddp" / "checkpoint.pt")["step"]
    if done != steps:
        raise CheckFailed(f"the torchrun run stopped at step {done} of {steps}")
    backend = "nccl" if plan.device == "cuda" else "gloo"
    return f"1 process, {backend}: {steps} steps", dict(steps=steps, backend=backend)


def check_resume(plan: Plan, out: Path, env: dict) -> tuple[str, dict]:
    run, steps = out / "resume", plan.resume_steps
    args = train_args(plan, run, steps) + ["--ckpt-every", "5" if plan.device == "cpu" else "20"]
    print("$ " + " ".join([sys.executable, "-m", *args]) + "   (then Ctrl-C)", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + plan.timeout
    while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=plan.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise CheckFailed("the run did not stop after Ctrl-C") from None
    if proc.returncode != 128 + signal.SIGINT:
        raise CheckFailed(f"Ctrl-C should end the run with status 130, got {proc.returncode}:\n{tail(err)}")
    cut = load_checkpoint(run / "checkpoint.pt")["step"]
    if not 0 < cut < steps:
        raise CheckFailed(f"the run was not interrupted mid-way (saved step {cut} of {steps})")
    command(["minijepa.train", "--out", str(run), "--resume", "--no-progress"], env, plan.timeout)
    done, rows = load_checkpoint(run / "checkpoint.pt")["step"], [r["step"] for r in metrics(run)]
    if done != steps or rows != list(range(steps)):
        raise CheckFailed(f"after --resume: step {done} of {steps}, metrics rows {rows[:3]}...{rows[-3:]}")
    return f"Ctrl-C at step {cut}, --resume to {steps}, metrics rows 0..{steps - 1} once each", dict(cut=cut)


# ------------------------------------------------------------------------------------------------------------ main
def format_table(rows: list[Row]) -> str:
    lines = [("step", "setting", "result", "time", "status")] + [
        (r.step, r.setting, r.result, f"{r.seconds:.0f} s", r.status) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def run_checks(plan: Plan, out: Path, only: set[str], env: dict, data: str) -> list[Row]:
    """Every step in `only`, in order; a failure is recorded (and its output printed) and the checks go on."""
    todo: list[tuple[str, str, Callable[[], tuple[str, dict]]]] = []
    if "bench" in only:
        todo += [("bench", f"{preset}, {'compiled' if compiled else 'eager'}",
                  lambda p=preset, c=compiled: check_bench(plan, out, env, p, c)) for preset, compiled in plan.benches]
    todo += [(name, setting, fn) for name, setting, fn in (
        ("train", f"{plan.model_name}, {plan.train_steps} steps, {data}", lambda: check_train(plan, out, env)),
        ("evaluate", "the train step's run, I-JEPA read-outs", lambda: check_evaluate(plan, out, env)),
        ("ddp", f"{plan.model_name}, torchrun", lambda: check_ddp(plan, out, env)),
        ("resume", f"{plan.model_name}, {plan.resume_steps} steps", lambda: check_resume(plan, out, env)))
        if name in only]
    rows: list[Row] = []
    for name, setting, fn in todo:
        row = Row(name, setting)
        if name == "evaluate" and any(r.step == "train" and r.status != "ok" for r in rows):
            row.status = "skipped (train failed)"
        else:
            t0 = time.perf_counter()
            try:
                row.result, row.figures = fn()
            except CheckFailed as e:
                row.status = "FAILED"
                print(f"gpucheck: {name} ({setting}) failed: {e}", file=sys.stderr, flush=True)
            row.seconds = time.perf_counter() - t0
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", metavar="DIR", help="an empty or new folder for the runs and gpucheck.json (default: a "
                                                "new temporary folder)")
    p.add_argument("--only", default=",".join(STEPS), metavar="STEP,...", help=f"the steps to run, comma-separated, "
                   f"of {{{','.join(STEPS)}}} (default: all; evaluate also runs train)")
    p.add_argument("--dry-run", action="store_true", help="the same commands on the CPU with tiny shapes (no GPU "
                                                          "needed): checks the script itself")
    args = p.parse_args(argv)
    only = set(args.only.split(","))
    if not only <= set(STEPS):
        p.error(f"--only: unknown step(s) {', '.join(sorted(only - set(STEPS)))}; choose from {', '.join(STEPS)}")
    if "evaluate" in only:
        only.add("train")  # it evaluates the train step's run
    if args.out is not None and Path(args.out).exists() and any(Path(args.out).iterdir()):
        p.error(f"--out {args.out} is not empty: give a new folder (or none, for a temporary one)")
    if not args.dry_run and not torch.cuda.is_available():
        print(f"gpucheck: no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is False): nothing to "
              f"check. `python -m minijepa.gpucheck --dry-run` runs the same commands on the CPU with tiny shapes.")
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="minijepa-gpucheck-"))
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan.make(args.dry_run)
    where = "dry run on the CPU" if args.dry_run else torch.cuda.get_device_name(0)
    print(f"gpucheck: {where}, torch {torch.__version__}, CUDA {torch.version.cuda}; writing to {out}", flush=True)
    data_env, data = training_data(out, args.dry_run)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           **data_env}
    rows = run_checks(plan, out, only, env, data)
    print(f"\ngpucheck: {where}\n" + format_table(rows))
    (out / "gpucheck.json").write_text(json.dumps(dict(device=where, torch=torch.__version__, cuda=torch.version.cuda,
                                                       data=data, rows=[asdict(r) for r in rows]), indent=2) + "\n")
    failed = [r.step + (f" ({r.setting})" if r.step == "bench" else "") for r in rows if r.status == "FAILED"]
    if failed:
        raise SystemExit(f"error: gpucheck failed at: {'; '.join(failed)} (output above; all figures in "
                         f"{out / 'gpucheck.json'})")
    print(f"all {len(rows)} checks passed; figures in {out / 'gpucheck.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
