"""The distractor dial: latent vs pixel targets as unpredictable detail is turned up.

I.i.d. noise and photo clutter (minijepa/distractors.py) at three strengths each, and none, over seeds, on the `demo`
preset; draws the dial figure (RECORD/distractors.png). `--diagnose`: what the read-outs see in the finished runs
(RECORD/distractors-diagnosis.md)."""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import NamedTuple

from ..distractors import Distractor, corrupt_images
from ..evaluate import METRICS, corrupted_splits, eval_splits, extract_features, pixel_features
from ..finetune import FINETUNE, batch_and_steps
from ..probes import knn_accuracy, pca_whitener
from ..plots import plot_dial
from ..train import PRESETS, build_model, load_run
from .runs import Plan, folders, load_records, record_path, seed_list, train_and_evaluate, write_record, write_table
from .tables import Gap, cells, judge_gap, mean_sd, one_protocol, pm, readout_name, whitened

DIAL = {"noise": (0.1, 0.2, 0.4), "clutter": (0.25, 0.5, 1.0)}  # strengths of each kind (0: no distractor)
DIAL_METRICS = METRICS + ("finetune_1pct",)  # the read-outs a dial row keeps (fine-tuning: None where not run)
ENCODERS = {"latent": "I-JEPA (latent targets)", "pixels": "pixel targets", "random_init": "random init",
            "raw_pixels": "raw pixels"}


def distractor_specs(kinds: tuple[str, ...] = tuple(DIAL)) -> list[str]:
    """The study's distractors, as train.py's --distractor takes them: "none", "noise:0.1", ..."""
    unknown = [k for k in kinds if k not in DIAL]
    if unknown:
        raise ValueError(f"unknown distractor kind(s) {unknown}; choose from {list(DIAL)}")
    return ["none"] + [f"{kind}:{s:g}" for kind in kinds for s in DIAL[kind]]


def dial_run(preset: str, target: str, spec: str, seed: int) -> str:
    """The name of a distractor-study run (its folder and record): e.g. demo-latent-noise0.2-seed1."""
    return f"{preset}-{target}-{spec.replace(':', '')}-seed{seed}"


def study(out: Path, preset: str = "demo", seeds: list[int] = (0, 1), plan: Plan | None = None,
          record: Path | None = None, kinds: tuple[str, ...] = tuple(DIAL)) -> str:
    """Latent vs pixel targets, with every distractor of DIAL (or of `kinds`) and none, over seeds (seed-major: one
    seed's whole dial first). The latent runs also read out the baselines (random init, raw pixels) on the same
    corrupted images."""
    plan = plan or Plan()
    specs = distractor_specs(kinds)
    summaries = []
    for s in seeds:
        for spec in specs:
            for t in ("latent", "pixels"):
                name = dial_run(preset, t, spec, s)
                summaries.append(train_and_evaluate(
                    out / name, preset, {"target": t, "seed": str(s), "distractor": spec}, baseline=t == "latent",
                    table_only=not plan.may_train(name), record=record_path(record, name)))
    done = [s for s in summaries if s is not None]
    rows = dial_rows(done)
    return dial_table(rows, dial_left_out(done)) + "\n\n" + dial_differences(rows)


def dial_rows(summaries: list[dict]) -> list[dict]:
    """Flatten the distractor study's finished runs into one row per (distractor, encoder, seed): kind, strength,
    encoder, seed, the read-outs on corrupted images, the clean ones, and the run's collapse signals. This is what
    the table and the dial figure are drawn from. One protocol only: once some runs have been read out with the
    current probes, the runs still read out with the whitened ones are left out (`dial_left_out` names them), so that
    no row averages the two protocols and no difference sets one against the other (as `tables.one_protocol`)."""
    rows = []
    for summary in (s for s in one_protocol(summaries) if s is not None):
        result, cfg = summary["result"], summary["result"]["config"]
        d = Distractor.parse(cfg.get("distractor", "none"))
        for key in ("ijepa", "random_init", "raw_pixels"):
            if key not in result:
                continue
            encoder = cfg["target"] if key == "ijepa" else key
            clean = result.get("clean", result)[key]
            rows.append(dict(kind=d.kind if d else "none", strength=d.strength if d else 0.0, encoder=encoder,
                             seed=cfg["seed"], **{m: result[key].get(m) for m in DIAL_METRICS},
                             **{f"clean_{m}": clean.get(m) for m in DIAL_METRICS}, n_test=result[key]["n_test"],
                             n_10_per_class=result[key].get("n_10_per_class"), n_1pct=result[key].get("n_1pct"),
                             whitened=whitened(result), feat_std=summary["feat_std"] if key == "ijepa" else None,
                             erank=summary["erank"] if key == "ijepa" else None))
    return rows


def dial_left_out(summaries: list[dict]) -> list[str]:
    """The runs `dial_rows` leaves out: those still read out with the whitened probes, where others have been read
    out again with the current ones (e.g. "noise 0.2, pixel targets, seed 1")."""
    names = []
    for s, kept in zip(summaries, one_protocol(summaries)):
        if kept is None:
            cfg = s["result"]["config"]
            d = Distractor.parse(cfg.get("distractor", "none"))
            names.append(f"{'none' if d is None else f'{d.kind} {d.strength:g}'}, {ENCODERS[cfg['target']]}, "
                         f"seed {cfg['seed']}")
    return names


def dial_settings(rows: list[dict]) -> list[tuple[str, float, str]]:
    """The distractor settings present in dial rows, clean first: (kind, strength, label such as "noise 0.2")."""
    settings = sorted({(r["kind"], r["strength"]) for r in rows}, key=lambda ks: (ks[0] != "none", ks))
    return [(k, x, "none" if k == "none" else f"{k} {x:g}") for k, x in settings]


def dial_table(rows: list[dict], left_out: list[str] = ()) -> str:
    """One line per (distractor, encoder): mean ± std over the seeds that finished; the fine-tuning column where the
    runs have it (the current probes). `left_out`: runs not read out again yet (`dial_left_out`), named under it."""
    n10 = next((r["n_10_per_class"] for r in rows if r["n_10_per_class"]), "?")
    n1 = next((r["n_1pct"] for r in rows if r["n_1pct"]), "?")
    old = any(r.get("whitened") for r in rows)
    w, wh = (", whitened", " (whitened)") if old else ("", "")
    metrics = ("linear", "knn", "linear_10_per_class", "linear_1pct") + (() if old else ("finetune_1pct",))
    names = [f"linear{wh}", "kNN", f"10 / class ({n10} labels{w})", f"1 % ({n1} labels{w})"] + \
        ([] if old else [f"fine-tuned 1 % ({n1} labels)"])
    lines = [f"| distractor | encoder | seeds | {' | '.join(names)} | clean kNN | clean 10 / class{wh} | feature std | "
             f"eff. rank |", "|---" * (len(names) + 7) + "|"]
    for kind, strength, spec in dial_settings(rows):
        for encoder, label in ENCODERS.items():
            group = [r for r in rows if (r["kind"], r["strength"], r["encoder"]) == (kind, strength, encoder)]
            if not group:
                continue
            values = cells(group, metrics + ("clean_knn", "clean_linear_10_per_class"))
            collapse = ["", ""] if encoder not in ("latent", "pixels") else \
                [f"{statistics.fmean(r['feat_std'] for r in group):.3f}",
                 f"{statistics.fmean(r['erank'] for r in group):.1f}"]
            seeds = ",".join(str(r["seed"]) for r in sorted(group, key=lambda r: r["seed"]))
            lines.append(f"| {spec} | {label} | {seeds} | " + " | ".join(values + collapse) + " |")
    if not old:
        steps = FINETUNE["epochs"] * batch_and_steps(n1)[1] if isinstance(n1, int) else "?"
        lines += ["", f"Fine-tuned 1 %: {n1} labels give the fixed recipe (`finetune.FINETUNE`, {FINETUNE['epochs']} "
                      f"epochs of batch {FINETUNE['batch_size']}) {steps} optimizer steps."]
    if left_out:
        lines += ["", f"Not yet read out again with the current probes, so left out for now ({len(left_out)} runs): "
                  + "; ".join(left_out) + "."]
    return "\n".join(lines)


class DialContrast(NamedTuple):
    """Latent against pixel targets at one distractor setting, on one read-out (`dial_contrasts`)."""
    setting: str  # "none", "noise 0.2", ...
    readout: str  # its name in a table (`readout_name`)
    diffs: list[float]  # latent - pixels, seed by seed, in points
    gap: float  # their mean
    spread: float  # the margin a gap must pass (`judge_gap`)
    outcome: str  # `judge_gap`'s words
    over_random: float | None  # latent - random init, mean over the seeds


def dial_contrasts(rows: list[dict], metrics: tuple[str, ...] = ("knn", "linear_10_per_class")) -> list[DialContrast]:
    """Latent minus pixel targets, per distractor setting and read-out (those the runs have), over the seeds both
    rows have. A gap counts only beyond the spread: twice the combined seed std of the two rows, and at least 2
    standard errors of one test accuracy (`judge_gap`); a gap of one seed is said to be that seed's only."""
    out = []
    for kind, strength, spec in dial_settings(rows):
        by = {e: {r["seed"]: r for r in rows if (r["kind"], r["strength"], r["encoder"]) == (kind, strength, e)}
              for e in ("latent", "pixels", "random_init")}
        seeds = sorted(set(by["latent"]) & set(by["pixels"]))
        for m in metrics if seeds else ():
            if any(by[e][s].get(m) is None for e in ("latent", "pixels") for s in seeds):
                continue  # a read-out these runs lack (fine-tuning, in the whitened protocol)
            lat, pix = ([100 * by[e][s][m] for s in seeds] for e in ("latent", "pixels"))
            diffs = [a - b for a, b in zip(lat, pix)]
            spread, outcome = judge_gap(mean_sd(lat), mean_sd(pix), by["latent"][seeds[0]]["n_test"], diffs,
                                        ("latent", "pixels"))
            rnd = [100 * (by["latent"][s][m] - by["random_init"][s][m]) for s in seeds
                   if by["random_init"].get(s, {}).get(m) is not None]
            old = any(by[e][s].get("whitened") for e in ("latent", "pixels") for s in seeds)
            out.append(DialContrast(spec, readout_name(m, old), diffs, statistics.fmean(diffs), spread, outcome,
                                    statistics.fmean(rnd) if rnd else None))
    return out


def dial_differences(rows: list[dict], metrics: tuple[str, ...] = ("knn", "linear_10_per_class")) -> str:
    """`dial_contrasts` as a table: per setting and read-out, latent minus pixels seed by seed, the mean, the spread,
    the outcome, and latent minus random init."""
    lines = ["| distractor | read-out | latent − pixels, per seed | mean | spread | outcome | "
             "latent − random init |", "|---" * 7 + "|"]
    for c in dial_contrasts(rows, metrics):
        lines.append(f"| {c.setting} | {c.readout} | {', '.join(f'{d:+.1f}' for d in c.diffs)} | {c.gap:+.1f} | "
                     f"{c.spread:.1f} | {c.outcome} | " +
                     (" |" if c.over_random is None else f"{c.over_random:+.1f} |"))
    return "\n".join(lines)


def dial_gaps(rows: list[dict], metrics: tuple[str, ...] = ("knn", "linear_10_per_class")) -> list[Gap]:
    """`dial_contrasts` as `tables.Gap`s of latent against pixel targets, one per setting and read-out (readout:
    e.g. "kNN at noise 0.2"), for `tables.sentence`."""
    def side(c: DialContrast) -> str:
        if "on this seed only" in c.outcome:
            return "one seed"
        return "level" if "beyond the spread" not in c.outcome else "ahead" if c.gap > 0 else "behind"
    return [Gap(f"{c.readout} at {c.setting}", c.gap, side(c)) for c in dial_contrasts(rows, metrics)]


def diagnose(run_dir: Path) -> dict:
    """What the read-outs see in a run of the distractor study, for its target encoder, its random initialisation
    and the raw pixels, on the evaluation's corrupted images:
        distractor_share  the same test images corrupted by two independent draws of the distractor: the variance
                          between the two features of one image, over the variance of the features across images
                          (0: the features ignore the distractor; 1: they are nothing but the distractor)
        knn, knn_whitened kNN on the features as evaluated, and on the linear probe's whitened features (all
                          directions at unit variance): a large gain means the class information is there, but in
                          faint directions that larger, class-free ones hide from cosine similarity."""
    cfg, model, ckpt = load_run(run_dir)
    distractor = Distractor.parse(cfg.distractor)
    clean = eval_splits(cfg)
    train_split, test_split = clean if distractor is None else corrupted_splits(clean, distractor)
    redraw = None if distractor is None else corrupt_images(clean[1].images, distractor, "test, second draw")
    mean, std = ckpt["norm"]["mean"], ckpt["norm"]["std"]
    featurise = {"ijepa": lambda x: extract_features(model.target_encoder, x, mean, std),
                 "random_init": lambda x: extract_features(build_model(cfg).target_encoder, x, mean, std),
                 "raw_pixels": lambda x: pixel_features(x, mean, std)}
    out = {}
    for name, f in featurise.items():
        tr, te = f(train_split.images), f(test_split.images)  # (N, F), (M, F)
        whiten = pca_whitener(tr)
        out[name] = dict(knn=knn_accuracy(tr, train_split.labels, te, test_split.labels),
                         knn_whitened=knn_accuracy(whiten(tr), train_split.labels, whiten(te), test_split.labels))
        if redraw is not None:
            within = (te - f(redraw)).square().sum(1).mean() / 2  # per image: half the squared distance of 2 draws
            out[name]["distractor_share"] = (within / te.var(0).sum()).item()
    return out


def diagnose_records(out: Path, record: Path) -> list[dict]:
    """Add `diagnose` to every record of the distractor study whose run directory is here and that has none yet."""
    for path in sorted(record.glob("*.json")):
        summary = json.loads(path.read_text())
        if "diagnosis" not in summary and (out / path.stem / "checkpoint.pt").exists():
            print(f"diagnosing {out / path.stem}", flush=True)
            summary["diagnosis"] = diagnose(out / path.stem)
            write_record(path, summary)
    return load_records(record)


def diagnosis_table(summaries: list[dict]) -> str:
    """kNN on the evaluated and on whitened features, and the distractor's share of the feature variance, per
    (distractor, encoder): means over the diagnosed seeds."""
    groups: dict[tuple, list[dict]] = {}
    for s in summaries:
        if "diagnosis" not in s:
            continue
        cfg = s["result"]["config"]
        for key, d in s["diagnosis"].items():
            encoder = cfg["target"] if key == "ijepa" else key
            if key != "ijepa" and cfg["target"] != "latent":
                continue  # the baselines of a setting: once, from its latent runs
            groups.setdefault((cfg["distractor"], encoder), []).append(d)
    lines = ["| distractor | encoder | runs | kNN | kNN on whitened features | distractor's share of the feature "
             "variance |", "|---|---|---|---|---|---|"]
    order = {spec: i for i, spec in enumerate(distractor_specs())}
    for (spec, encoder), ds in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), list(ENCODERS).index(
            kv[0][1]))):
        share = f"{statistics.fmean(d['distractor_share'] for d in ds):.3f}" if "distractor_share" in ds[0] else ""
        lines.append(f"| {spec.replace(':', ' ')} | {ENCODERS[encoder]} | {len(ds)} | {pm([d['knn'] for d in ds])} | "
                     f"{pm([d['knn_whitened'] for d in ds])} | {share} |")
    return "\n".join(lines)


def kind_list(text: str) -> tuple[str, ...]:
    """--kinds: "noise,clutter" -> ("noise", "clutter"), each a kind of DIAL."""
    kinds = tuple(text.split(","))
    try:
        distractor_specs(kinds)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return kinds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="the preset to train (default demo)")
    p.add_argument("--seeds", type=seed_list, default=[0, 1], help="comma-separated seeds (default 0,1)")
    p.add_argument("--kinds", type=kind_list, default=tuple(DIAL),
                   help=f"comma-separated distractor kinds to run, of {', '.join(DIAL)} (default all)")
    p.add_argument("--diagnose", action="store_true", help="add what the read-outs see (`diagnose`) to the records "
                                                           "of finished runs in --out; train nothing")
    p.set_defaults(command=command)


def command(args: argparse.Namespace, plan: Plan) -> None:
    """`python -m minijepa.studies distractors`: writes RECORD/distractors.md and .png (with --diagnose:
    distractors-diagnosis.md)."""
    out, record = folders(args, "distractors")
    if args.diagnose:
        if record is None:
            raise ValueError("--diagnose adds to the records: give it a --record folder")
        write_table(args, "distractors-diagnosis", diagnosis_table(diagnose_records(out, record)))
        return
    table = study(out, args.preset, args.seeds, plan, record, args.kinds)
    if plan.listing is None:
        where = write_table(args, "distractors", table)
        rows = dial_rows(load_records(record) if record is not None else [])
        if rows:
            plot_dial(rows, where / "distractors.png")
