"""The ablations: the `demo` preset, one knob changed at a time.

The `demo` preset (embedded Fashion-MNIST subset) with one knob changed per row: target normalisation, EMA momentum,
learning rate down and up, predictor depth and width, crop scale, batch size, schedule length, patch-embedding init.
`--seed N`: the same rows with another seed; `--only SLUG,...`: train just those rows. The table file holds a table
per seed and each knob against the baseline, seed by seed (beyond the seed spread or not)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from .distractors import dial_run
from .runs import Plan, record_path, slug, train_and_evaluate, write_table
from .tables import as_encoder, columns, contrast_table, headers, representative, summary_row, table_protocol

BASELINE = "baseline (demo preset)"
ABLATIONS: dict[str, dict[str, str]] = {  # name -> train.py overrides on top of `--preset demo`
    BASELINE: {},
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
JUDGED = ("knn", "linear_10_per_class")  # what each knob is judged on, as in the dial (1 % is 60 labels here)


def seed_folder(seed: int) -> str:
    """Where one seed's ablation runs and records go, under --out and --record: ablations/ for seed 0,
    ablations-seedN/ for another."""
    return "ablations" if seed == 0 else f"ablations-seed{seed}"


def ablation(out: Path, record: Path | None, name: str, seed: int, plan: Plan, listed_as: str | None = None
             ) -> dict | None:
    """One knob's run with one seed (trained if `plan` allows and it is missing); out and record are the study
    roots (--out, --record). The baseline is the distractor study's run without a distractor, the same
    configuration: trained once, read out with the baselines (random init, raw pixels) there. `listed_as` is the
    run's name in `plan` (default: the knob's slug, as this study, one seed at a time, lists it)."""
    if name == BASELINE:
        folder, run, overrides = "distractors", dial_run("demo", "latent", "none", seed), {"target": "latent"}
    else:
        folder, run, overrides = seed_folder(seed), slug(name), ABLATIONS[name]
    flags = {**overrides, "seed": str(seed), **({"distractor": "none"} if name == BASELINE else {})}  # as the dial
    return train_and_evaluate(out / folder / run, "demo", flags, baseline=name == BASELINE,
                              table_only=not plan.may_train(listed_as or slug(name)),
                              record=record_path(None if record is None else record / folder, run))


def study(out: Path, record: Path | None = None, seed: int = 0, plan: Plan | None = None) -> dict[str, dict | None]:
    """Train and evaluate every ablation that `plan` allows, all with `seed`: {name: summary, None if not run}."""
    plan = plan or Plan()
    plan.check_only([slug(name) for name in ABLATIONS], "ablation")
    return {name: ablation(out, record, name, seed, plan) for name in ABLATIONS}


def seed_table(seed: int, runs: dict[str, dict | None]) -> str:
    """One seed's runs ({name: summary}), a row each, in one protocol (`table_protocol`), below the baselines that
    the baseline run read out; the knobs not run with this seed are named under the table."""
    seen = dict(zip(runs, table_protocol(list(runs.values()))))
    result = representative(list(seen.values()))
    metrics = columns(result)
    names = headers(result)
    lines = [f"| variant, seed {seed} | {' | '.join(names)} | final loss | feature std | eff. rank |",
             "|---" * (len(names) + 4) + "|"]
    if seen[BASELINE] is not None:
        lines += [summary_row(label, [seen[BASELINE]], key, metrics=metrics)
                  for label, key in (("random init (same ViT)", "random_init"), ("raw pixels", "raw_pixels"))]
    lines += [summary_row(name, [s], metrics=metrics) for name, s in seen.items() if s]
    missing = [name for name, s in seen.items() if s is None]
    return "\n".join(lines + (["", f"Not run with seed {seed}: {', '.join(missing)}."] if missing else []))


def differences(by_seed: dict[int, dict[str, dict | None]]) -> str:
    """The baseline against its random initialisation, and each knob against the baseline, seed by seed
    (`contrast_table`: beyond the seed spread on every seed, or not)."""
    seeds = sorted(by_seed)
    base = [by_seed[s][BASELINE] for s in seeds]
    contrasts = [("demo preset", "baseline", base, "random init", as_encoder(base, "random_init"))]
    contrasts += [(name, name, [by_seed[s][name] for s in seeds], "baseline", base) for name in ABLATIONS
                  if name != BASELINE]
    return contrast_table(contrasts, seeds, "variant", JUDGED)


def seeds_run(root: Path) -> list[int]:
    """The seeds with a folder of ablation runs or records under `root` (seed 0 always)."""
    found = (re.fullmatch(r"ablations-seed(\d+)", p.name) for p in root.glob("ablations-seed*"))
    return sorted({0} | {int(m.group(1)) for m in found if m})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="the seed of every run (default 0, runs in ablations/; "
                                                       "another N: ablations-seedN/)")
    p.set_defaults(command=command)


def command(args: argparse.Namespace, plan: Plan) -> None:
    """`python -m minijepa.studies ablations`: trains the rows of --seed, then writes RECORD/ablations.md with every
    seed run so far (a table each, then the differences)."""
    out, record = args.out, args.record
    trained = study(out, record, args.seed, plan)
    if plan.listing is not None:
        return
    seeds = sorted(set(seeds_run(out if record is None else record)) | {args.seed})
    by_seed = {s: trained if s == args.seed else study(out, record, s, Plan(table_only=True)) for s in seeds}
    parts = [seed_table(s, runs) for s, runs in by_seed.items()]
    parts.append("Each knob against the baseline, seed by seed where both rows have the seed (judged on kNN and "
                 "the 10-per-class probe):\n\n" + differences(by_seed))
    write_table(args, "ablations", "\n\n".join(parts))
