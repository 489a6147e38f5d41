"""The ablations: the `demo` preset, one knob changed at a time.

The `demo` preset (embedded Fashion-MNIST subset) with one knob changed per row: target normalisation, EMA momentum,
learning rate down and up, predictor depth and width, crop scale, batch size, schedule length, patch-embedding init.
`--seed N`: the same rows with another seed; `--only SLUG,...`: train just those rows."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..evaluate import METRICS
from .runs import Plan, folders, record_path, slug, train_and_evaluate, write_table
from .tables import headers

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


def baseline_rows(result: dict, blanks: int) -> list[str]:
    """Table rows of the baselines (random init, raw pixels) stored in one run's result."""
    names = (("random init (same ViT)", "random_init"), ("raw pixels", "raw_pixels"))
    return [f"| {label} | " + " | ".join(f"{100 * result[key][m]:.1f}" for m in METRICS) + " |" + " |" * blanks
            for label, key in names if key in result]


def study(out: Path, plan: Plan | None = None, seed: int = 0, record: Path | None = None) -> str:
    """Train and evaluate every ablation that `plan` allows (the table lists every finished run), all with the
    given seed."""
    plan = plan or Plan()
    slugs = {name: slug(name) for name in ABLATIONS}
    plan.check_only(list(slugs.values()), "ablation")
    rows, first = [], None
    for i, (name, overrides) in enumerate(ABLATIONS.items()):
        s = train_and_evaluate(out / slugs[name], "demo", {**overrides, "seed": str(seed)}, baseline=i == 0,
                               table_only=not plan.may_train(slugs[name]), record=record_path(record, slugs[name]))
        if s is None:
            rows.append(f"| {name} | not run yet |")
            continue
        first = first or s
        r = s["result"]["ijepa"]
        rows.append(f"| {name} | " + " | ".join(f"{100 * r[m]:.1f}" for m in METRICS) +
                    f" | {s['loss']:.4f} | {s['feat_std']:.3f} | {s['erank']:.1f} | {s['img_per_s']:.0f} |")
    if rows[0].endswith("not run yet |"):
        base = ["| random init (same ViT) | not run yet |"]
    else:
        base = baseline_rows(first["result"], 4)
    cols = headers(first["result"]) if first else headers({"ijepa": {}})
    return "\n".join([f"| variant | {' | '.join(cols)} | final loss | feature std | eff. rank | img/s |",
                      "|---|---|---|---|---|---|---|---|---|", *base, *rows])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="the seed of every run (default 0, runs in ablations/; "
                                                       "another N: ablations-seedN/)")
    p.set_defaults(command=command)


def command(args: argparse.Namespace, plan: Plan) -> None:
    """`python -m minijepa.studies ablations`: writes RECORD/ablations.md (ablations-seedN.md)."""
    name = "ablations" if args.seed == 0 else f"ablations-seed{args.seed}"
    out, record = folders(args, name)
    table = study(out, plan, args.seed, record)
    if plan.listing is None:
        write_table(args, name, table)
