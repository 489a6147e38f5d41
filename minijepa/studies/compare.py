"""The comparison: latent targets vs pixel targets vs random init vs raw pixels, over seeds.

A preset (default `fashion-cpu`) trained with latent and with pixel targets; the latent runs also read out the random
init and the raw pixels. `--layers 4`: read out the last 4 blocks instead of the last one; `--steps N`: a longer or
shorter schedule; `--loss smooth_l1`: the reference code's loss instead of the paper's L2. On fashion-cpu a longer
schedule or another loss is judged against the preset's own runs (`compare` itself), seed by seed."""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from ..train import PRESETS
from .runs import Plan, folders, record_path, seed_list, train_and_evaluate, write_table
from .tables import (as_encoder, cells, columns, contrast_table, headers, one_protocol, representative, whitened,
                     whitened_note)

TARGETS = ("latent", "pixels")


def study(out: Path, preset: str, seeds: list[int], layers: int = 1, steps: int | None = None,
          loss: str = "l2", plan: Plan | None = None, record: Path | None = None) -> str:
    """Latent vs pixel targets vs random init vs raw pixels on `preset` over `seeds`; `steps` replaces the preset's
    schedule length (warm-up: the first 10% of it), `loss` the prediction loss."""
    plan = plan or Plan()
    plan.check_only([f"{preset}-{t}-seed{s}" for s in seeds for t in TARGETS], "compare run")
    overrides = {} if steps is None else {"steps": str(steps), "warmup_steps": str(steps // 10)}
    if loss != "l2":
        overrides["loss"] = loss
    suffix = "" if layers == 1 else f"-{layers}layers"
    runs = {}
    for s in seeds:
        for t in TARGETS:
            name = f"{preset}-{t}-seed{s}"
            runs[t, s] = train_and_evaluate(out / name, preset, {"target": t, "seed": str(s), **overrides},
                                            baseline=t == "latent", layers=layers, table_only=not plan.may_train(name),
                                            record=record_path(record, name + suffix))
    readout = ("" if steps is None else f", {steps} steps") + ("" if loss == "l2" else f", {loss} loss") + \
        ("" if layers == 1 else f", last {layers} layers")
    done = [r for r in runs.values() if r is not None]
    table = representative(done)
    metrics, cols = columns(table), headers(table)
    lines = [f"| {preset}, {len(seeds)} seed(s){readout} | {' | '.join(cols)} | img/s | peak memory (MB) |",
             "|---" * (len(cols) + 3) + "|"]
    for name, target, key in (("I-JEPA (latent targets)", "latent", "ijepa"), ("pixel targets", "pixels", "ijepa"),
                              ("random init", "latent", "random_init"), ("raw pixels", "latent", "raw_pixels")):
        per_seed = [r for r in one_protocol([runs[target, s] for s in seeds]) if r is not None]
        if key == "raw_pixels":  # no training seed: every run reads out the same pixels
            per_seed = per_seed[:1]
        if not per_seed or key not in per_seed[0]["result"]:
            lines.append(f"| {name} | not run yet |")
            continue
        speed = " | " if key != "ijepa" else f"{statistics.fmean(r['img_per_s'] for r in per_seed):.0f} | " \
            f"{max(r['peak_mem_mb'] for r in per_seed):.0f}"
        seeds_note = "" if len(per_seed) == len(seeds) or key == "raw_pixels" else f" ({len(per_seed)} seed(s) so far)"
        lines.append(f"| {name}{seeds_note} | " + " | ".join(cells([r["result"][key] for r in per_seed], metrics))
                     + f" | {speed} |")
    lines += whitened_note({label: [runs[t, s] for s in seeds]
                            for t, label in zip(TARGETS, ("latent targets", "pixel targets"))}, table)
    latent, pixels = ([runs[t, s] for s in seeds] for t in TARGETS)
    if loss == "l2" and done and not whitened(table):  # the question the comparison is for
        contrasts = [(preset, "latent targets", latent, "random init", as_encoder(latent, "random_init")),
                     (preset, "latent targets", latent, "pixel targets", pixels),
                     (preset, "pixel targets", pixels, "random init", as_encoder(latent, "random_init"))]
        lines += ["", "**Does pretraining help?** (each row minus the reference row; seed by seed where both rows "
                  "have the seed)", "", contrast_table(contrasts, seeds, "differences", metrics),
                  "", "**The whitened probe beside the probes that replaced it** (the same features; whitened: "
                  "PCA-whitened first, which makes a probe blind to which directions carry the variance)", "",
                  probe_table(preset, {"I-JEPA (latent targets)": (latent, "ijepa"), "pixel targets": (pixels, "ijepa"),
                                       "random init": (latent, "random_init"), "raw pixels": (latent[:1], "raw_pixels")})]
    plain = plain_fashion_runs(out.parent, None if record is None else record.parent, seeds) \
        if (loss != "l2" or steps is not None) and preset == "fashion-cpu" and layers == 1 and done \
        and not whitened(table) else {}
    if any(any(rows) for rows in plain.values()):
        variant, reference = variant_names(preset, steps, loss)
        lines += ["", f"**Differences** ({variant} minus {reference}: each run against its twin in `study compare`, "
                  "seed by seed where both rows have the seed)", "",
                  variant_differences(variant, reference, {t: [runs[t, s] for s in seeds] for t in plain}, plain,
                                      seeds, metrics)]
    return "\n".join(lines)


PROBES = {"linear_whitened": "linear, whitened", "linear": "linear", "linear_whitened_10_per_class":
          "10 / class, whitened", "linear_10_per_class": "10 / class", "knn": "kNN"}


def probe_table(preset: str, rows: dict[str, tuple[list[dict | None], str]]) -> str:
    """The whitened diagnostic next to the current linear probes and kNN, for each row {label: (summaries, key)}."""
    lines = [f"| {preset}, read-out | {' | '.join(PROBES.values())} |", "|---" * (len(PROBES) + 1) + "|"]
    for label, (summaries, key) in rows.items():
        done = [s["result"][key] for s in one_protocol(summaries) if s is not None and key in s["result"]]
        if done:
            lines.append(f"| {label} | " + " | ".join(cells(done, tuple(PROBES))) + " |")
    return "\n".join(lines)


def plain_fashion_runs(root: Path, record_root: Path | None, seeds: list[int]) -> dict[str, list[dict | None]]:
    """The finished runs of the compare study on fashion-cpu (L2 loss, in root/compare/, records in
    record_root/compare/) over `seeds`, per target: {"latent": [summary or None, ...], "pixels": [...]}."""
    record = None if record_root is None else record_root / "compare"
    return {t: [train_and_evaluate(root / "compare" / f"fashion-cpu-{t}-seed{s}", "fashion-cpu", {},
                                   baseline=t == "latent", table_only=True,
                                   record=record_path(record, f"fashion-cpu-{t}-seed{s}"))
                for s in seeds] for t in TARGETS}


def variant_names(preset: str, steps: int | None, loss: str) -> tuple[str, str]:
    """How a variant of the comparison and the preset's own runs are named in its table of differences:
    ("smooth_l1", "L2"), ("2400 steps", "1200 steps"), ("2400 steps, smooth_l1", "1200 steps, L2")."""
    variant = ([] if steps is None else [f"{steps} steps"]) + ([] if loss == "l2" else [loss])
    reference = ([] if steps is None else [f"{PRESETS[preset]['steps']} steps"]) + ([] if loss == "l2" else ["L2"])
    return ", ".join(variant), ", ".join(reference)


def variant_differences(variant: str, reference: str, runs: dict[str, list[dict | None]],
                        plain: dict[str, list[dict | None]], seeds: list[int], metrics: tuple[str, ...]) -> str:
    """Each target trained as the variant (runs: {target: summaries over `seeds`}) against the same target trained
    with the preset's recipe (plain: `plain_fashion_runs`), seed by seed, on `metrics` (the read-outs of the table
    above it)."""
    contrasts = [("fashion-cpu", f"{label}, {variant}", runs[t], f"{label}, {reference}", plain[t])
                 for t, label in (("latent", "latent targets"), ("pixels", "pixel targets"))]
    return contrast_table(contrasts, seeds, f"{variant} differences", metrics)


def schedule_length(text: str) -> int:
    """--steps: a whole number, at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, at least 1, got {text!r}")
    return int(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="fashion-cpu",
                   help="the preset to train (default fashion-cpu)")
    p.add_argument("--seeds", type=seed_list, default=[0, 1], help="comma-separated seeds (default 0,1)")
    p.add_argument("--layers", type=int, choices=[1, 4], default=1,
                   help="read out the last block or the last 4 (default 1; 4 evaluates finished runs again)")
    p.add_argument("--steps", type=schedule_length, help="train this many steps instead of the preset's (runs in "
                                                         "compare-Nsteps/, judged against the preset's runs)")
    p.add_argument("--loss", choices=["l2", "smooth_l1"], default="l2",
                   help="the prediction loss (default l2; smooth_l1: runs in compare-smooth_l1/, judged against l2)")
    p.set_defaults(command=command)


def command(args: argparse.Namespace, plan: Plan) -> None:
    """`python -m minijepa.studies compare`: writes RECORD/compare.md (compare-Nsteps, -smooth_l1, -4layers)."""
    name = "compare" + ("" if args.steps is None else f"-{args.steps}steps") + \
        ("" if args.loss == "l2" else f"-{args.loss}")
    out, record = folders(args, name)
    table = study(out, args.preset, args.seeds, args.layers, args.steps, args.loss, plan, record)
    if plan.listing is None:
        write_table(args, name if args.layers == 1 else f"{name}-{args.layers}layers", table)
