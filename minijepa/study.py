"""The recipe study behind docs/results.md: `python -m minijepa.study {ablations,compare} [--out runs/study]`.

    ablations  the `demo` preset (embedded Fashion-MNIST subset), one knob changed at a time (target normalisation,
               EMA momentum, learning rate down and up, predictor depth and width, crop scale, batch size,
               schedule length, patch-embedding init)
               (`--seed N`: the same rows with another seed; `--only SLUG,...`: train just those rows)
    compare    a preset (default `fashion-cpu`) with latent targets vs pixel targets vs random init, over seeds
               (`--layers 4`: read out the last 4 blocks instead of the last one; `--steps N`: a longer or shorter
               schedule)

Every run is a plain `python -m minijepa.train ...` followed by `python -m minijepa.evaluate ...` in a subprocess,
and the command lines are printed, so any row can be reproduced by hand. Finished runs are skipped: an interrupted
study continues where it stopped. The result is a markdown table, printed and written to OUT/<study>.md.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

from .evaluate import METRICS, eval_path
from .plots import read_metrics

ABLATIONS: dict[str, dict[str, str]] = {  # name -> train.py overrides on top of `--preset demo`
    "baseline (demo preset)": {},
    "no target layer norm": {"target_norm": "false"},
    "EMA 0.999 -> 1": {"momentum": "0.999"},
    "lr 3e-4": {"lr": "3e-4", "start_lr": "6e-5"},
    "lr 2e-3": {"lr": "2e-3", "start_lr": "4e-4"},
    "predictor depth 2": {"predictor_depth": "2"},
    "predictor width 128": {"predictor_dim": "128"},
    "crop scale (0.6, 1.0)": {"crop_scale": "0.6,1.0"},
    "batch size 64": {"batch_size": "64"},
    "1000 steps": {"steps": "1000", "warmup_steps": "100"},
    "xavier patch-embedding init": {"embed_init": "xavier"},
}


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def train_and_evaluate(out: Path, preset: str, overrides: dict[str, str], baseline: bool,
                       table_only: bool = False, layers: int = 1) -> dict | None:
    """Train (unless finished) and evaluate (unless done) one run; return its summary row. `layers` picks the
    read-out (the last block, or the last 4). With `table_only`, nothing runs: an unfinished run gives None."""
    result_path = eval_path(out, layers)
    if table_only and not result_path.exists():
        return None
    if not result_path.exists():
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in overrides.items()]
        resume = ["--resume"] if (out / "checkpoint.pt").exists() else []  # a finished run: trains 0 steps
        run([sys.executable, "-m", "minijepa.train", "--preset", preset, "--out", str(out), "--no-progress",
             *flags, *resume])
        run([sys.executable, "-m", "minijepa.evaluate", str(out), f"--layers={layers}",
             *([] if baseline else ["--no-baseline"])])
    result = json.loads(result_path.read_text())
    rows = read_metrics(out / "metrics.jsonl")
    logged = [r for r in rows if "img_per_s" in r]
    tail = rows[-max(1, len(rows) // 10):]  # final loss: mean over the last 10% of steps
    return dict(result=result, loss=statistics.fmean(r["loss"] for r in tail), erank=logged[-1]["erank"],
                feat_std=logged[-1]["feat_std"],
                img_per_s=statistics.median(r["img_per_s"] for r in logged[1:] or logged),
                peak_mem_mb=max(r.get("peak_mem_mb", 0.0) for r in logged))


def ablations(out: Path, table_only: bool = False, only: set[str] | None = None, seed: int = 0) -> str:
    """Train and evaluate every ablation (or just the slugs in `only`; the table still lists all finished runs),
    all with the given seed."""
    slugs = {name: re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-") for name in ABLATIONS}
    if only is not None and only - set(slugs.values()):
        raise ValueError(f"unknown ablation(s) {sorted(only - set(slugs.values()))}; "
                         f"choose from {list(slugs.values())}")
    lines = ["| variant | linear | kNN | 10 / class | 1 % | final loss | feature std | eff. rank | img/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    random_row = "| random init (same ViT) | not run yet |"
    for i, (name, overrides) in enumerate(ABLATIONS.items()):
        slug = slugs[name]
        s = train_and_evaluate(out / slug, "demo", {**overrides, "seed": str(seed)}, baseline=i == 0,
                               table_only=table_only or (only is not None and slug not in only))
        if s is None:
            lines.append(f"| {name} | not run yet |")
            continue
        r = s["result"]["ijepa"]
        lines.append(f"| {name} | " + " | ".join(f"{100 * r[m]:.1f}" for m in METRICS) +
                     f" | {s['loss']:.4f} | {s['feat_std']:.3f} | {s['erank']:.1f} | {s['img_per_s']:.0f} |")
        if i == 0:
            base = s["result"]["random_init"]
            random_row = "| random init (same ViT) | " + " | ".join(f"{100 * base[m]:.1f}" for m in METRICS) + \
                " | | | | |"
    return "\n".join([lines[0], lines[1], random_row, *lines[2:]])


def compare(out: Path, preset: str, seeds: list[int], layers: int = 1, steps: int | None = None) -> str:
    """Latent vs pixel targets vs random init on `preset` over `seeds`; `steps` replaces the preset's schedule
    length (warm-up: the first 10% of it)."""
    schedule = {} if steps is None else {"steps": str(steps), "warmup_steps": str(steps // 10)}
    runs = {(t, s): train_and_evaluate(out / f"{preset}-{t}-seed{s}", preset,
                                       {"target": t, "seed": str(s), **schedule},
                                       baseline=t == "latent", layers=layers)
            for s in seeds for t in ("latent", "pixels")}

    def cell(values: list[float]) -> str:
        mean = 100 * statistics.fmean(values)
        return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"

    readout = ("" if steps is None else f", {steps} steps") + ("" if layers == 1 else f", last {layers} layers")
    lines = [f"| {preset}, {len(seeds)} seed(s){readout} | linear | kNN | 10 / class | 1 % | img/s | peak memory (MB) |",
             "|---|---|---|---|---|---|---|"]
    for name, target, key in (("I-JEPA (latent targets)", "latent", "ijepa"),
                              ("pixel targets", "pixels", "ijepa"),
                              ("random init", "latent", "random_init")):
        per_seed = [runs[target, s] for s in seeds]
        speed = "" if key == "random_init" else \
            f"{statistics.fmean(r['img_per_s'] for r in per_seed):.0f} | " \
            f"{max(r['peak_mem_mb'] for r in per_seed):.0f}"
        lines.append(f"| {name} | " + " | ".join(cell([r["result"][key][m] for r in per_seed]) for m in METRICS)
                     + f" | {speed or ' | '} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("study", choices=["ablations", "compare"])
    p.add_argument("--out", default="runs/study")
    p.add_argument("--preset", default="fashion-cpu", help="compare: the preset to train")
    p.add_argument("--seeds", default="0,1", help="compare: comma-separated seeds")
    p.add_argument("--seed", type=int, default=0, help="ablations: the seed of every run (seed 0: OUT/ablations/, "
                                                       "others: OUT/ablations-seedN/)")
    p.add_argument("--layers", type=int, default=1, choices=[1, 4],
                   help="compare: read out the last block or the last 4 (evaluates finished runs again)")
    p.add_argument("--steps", type=int, help="compare: train this many steps instead of the preset's "
                                             "(runs in OUT/compare-Nsteps/)")
    p.add_argument("--table-only", action="store_true", help="ablations: train nothing, tabulate the finished runs")
    p.add_argument("--only", help="ablations: comma-separated run slugs to train, e.g. lr-3e-4,ema-0.999-1 "
                                  "(two studies with disjoint --only lists can run side by side)")
    args = p.parse_args(argv)
    if args.study == "ablations":  # runs in OUT/ablations[-seedN]/, table in OUT/ablations[-seedN].md
        name = "ablations" if args.seed == 0 else f"ablations-seed{args.seed}"
        out = Path(args.out) / name
        out.mkdir(parents=True, exist_ok=True)
        try:
            table = ablations(out, args.table_only, set(args.only.split(",")) if args.only else None, args.seed)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    else:  # runs in OUT/compare[-Nsteps]/, table in OUT/compare[-Nsteps][-4layers].md
        runs_name = "compare" if args.steps is None else f"compare-{args.steps}steps"
        name = runs_name if args.layers == 1 else f"{runs_name}-{args.layers}layers"
        out = Path(args.out) / runs_name
        out.mkdir(parents=True, exist_ok=True)
        table = compare(out, args.preset, [int(s) for s in args.seeds.split(",")], args.layers, args.steps)
    (out.parent / f"{name}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
