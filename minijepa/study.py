"""The studies behind docs/results.md: `python -m minijepa.study {ablations,compare,distractors,regularisers}`.

    ablations  the `demo` preset (embedded Fashion-MNIST subset), one knob changed at a time (target normalisation,
               EMA momentum, learning rate down and up, predictor depth and width, crop scale, batch size,
               schedule length, patch-embedding init)
               (`--seed N`: the same rows with another seed; `--only SLUG,...`: train just those rows)
    compare    a preset (default `fashion-cpu`) with latent targets vs pixel targets vs random init, over seeds
               (`--layers 4`: read out the last 4 blocks instead of the last one; `--steps N`: a longer or shorter
               schedule; `--loss smooth_l1`: the reference code's loss instead of the paper's L2, judged against
               the L2 runs seed by seed)
    distractors  latent vs pixel targets as unpredictable detail is turned up (distractors.py): i.i.d. noise and
               photo clutter at three strengths each, and none, over seeds, on the `demo` preset; draws the dial
               figure (OUT/distractors.png)
    regularisers  VICReg and SIGReg against collapse (regularisers.py): a weight sweep on `demo`, the best weights on
               `fashion-cpu`, and the collapse-prone settings with and without, with verdicts against pixel targets

Every run is a plain `python -m minijepa.train ...` followed by `python -m minijepa.evaluate ...` in a subprocess,
and the command lines are printed, so any row can be reproduced by hand. Each finished run leaves a small record
(its read-outs, final loss, collapse signals and their trace over the steps) in RECORD/<study>/<run>.json
(`--record`, default docs/studies/, committed with the repo): runs with a record, or with a finished run directory,
are never trained again, so an interrupted study continues where it stopped, on this machine or another.
`--shard I/N` trains every N-th run only (two shards side by side, one CPU thread each); `--list` prints the runs
and trains nothing. The result is a markdown table, printed and written to OUT/<study>.md.
"""
from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path


from .distractors import Distractor, corrupt_images
from .evaluate import (METRICS, corrupted_splits, eval_path, eval_splits, extract_features, knn_accuracy,
                       pca_whitener, pixel_features, spread_margin)
from .plots import plot_dial, read_metrics
from .results import markdown_tables
from .train import PRESETS, ArgumentParser, build_model, load_run, user_errors

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


class Plan:
    """Which runs this process may train: `table_only` trains none, `only` names a set of run slugs, `shard` (i, n)
    takes every n-th run of the study, starting at the i-th. `listing` collects the runs instead of training."""

    def __init__(self, table_only: bool = False, only: set[str] | None = None, shard: tuple[int, int] = (0, 1),
                 record: Path | None = None, listing: list[str] | None = None):
        self.table_only, self.only, self.shard, self.record, self.listing = table_only, only, shard, record, listing
        self.count = 0

    def may_train(self, slug: str) -> bool:
        i, self.count = self.count, self.count + 1
        if self.listing is not None:
            self.listing.append(slug)
            return False
        return not self.table_only and (self.only is None or slug in self.only) and i % self.shard[1] == self.shard[0]


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:  # the command has printed why; the study stops here, resumable
        raise SystemExit(f"error: the study stopped at this failed command (fix it, then rerun the study to "
                         f"continue): {' '.join(cmd)}")


def train_and_evaluate(out: Path, preset: str, overrides: dict[str, str], baseline: bool,
                       table_only: bool = False, layers: int = 1, record: Path | None = None) -> dict | None:
    """Train (unless finished) and evaluate (unless done) one run; return its summary row. `layers` picks the
    read-out (the last block, or the last 4). A summary already in `record` (a JSON file) is returned as it is;
    a new one is written there. With `table_only`, nothing runs: an unfinished run gives None."""
    if record is not None and record.exists():
        return json.loads(record.read_text())
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
    summary = dict(result=result, loss=statistics.fmean(r["loss"] for r in tail),
                   pred_loss=statistics.fmean(r.get("pred_loss", r["loss"]) for r in tail), erank=logged[-1]["erank"],
                   feat_std=logged[-1]["feat_std"],
                   img_per_s=statistics.median(r["img_per_s"] for r in logged[1:] or logged),
                   peak_mem_mb=max(r.get("peak_mem_mb", 0.0) for r in logged),
                   trace={k: [r.get(k) for r in logged] for k in ("step", "loss", "feat_std", "erank")})
    if record is not None:  # atomic, like a checkpoint: a killed study never leaves half a record
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(record.name + ".tmp")
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
        tmp.replace(record)
    return summary


def mean_sd(values: list[float]) -> tuple[float, float]:
    """The mean and the seed std (0 for one seed) of a row's values."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pm(values: list[float]) -> str:
    """Mean ± std over seeds, in %."""
    mean, std = mean_sd(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if len(values) > 1 else f"{100 * mean:.1f}"


def headers(result: dict) -> list[str]:
    """The read-outs' column names, with how many labels the low-shot probes had."""
    r = result["ijepa"]
    return ["linear", "kNN", f"10 / class ({r['n_10_per_class']} labels)" if "n_10_per_class" in r else "10 / class",
            f"1 % ({r['n_1pct']} labels)" if "n_1pct" in r else "1 %"]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def record_path(record: Path | None, run_slug: str) -> Path | None:
    return None if record is None else record / f"{run_slug}.json"


def baseline_rows(result: dict, blanks: int) -> list[str]:
    """Table rows of the baselines (random init, raw pixels) stored in one run's result."""
    names = (("random init (same ViT)", "random_init"), ("raw pixels", "raw_pixels"))
    return [f"| {label} | " + " | ".join(f"{100 * result[key][m]:.1f}" for m in METRICS) + " |" + " |" * blanks
            for label, key in names if key in result]


def ablations(out: Path, plan: Plan | None = None, seed: int = 0, record: Path | None = None) -> str:
    """Train and evaluate every ablation that `plan` allows (the table lists every finished run), all with the
    given seed."""
    plan = plan or Plan()
    slugs = {name: slug(name) for name in ABLATIONS}
    if plan.only is not None and plan.only - set(slugs.values()):
        raise ValueError(f"unknown ablation(s) {sorted(plan.only - set(slugs.values()))}; "
                         f"choose from {list(slugs.values())}")
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


def compare(out: Path, preset: str, seeds: list[int], layers: int = 1, steps: int | None = None,
            loss: str = "l2", plan: Plan | None = None, record: Path | None = None) -> str:
    """Latent vs pixel targets vs random init vs raw pixels on `preset` over `seeds`; `steps` replaces the preset's
    schedule length (warm-up: the first 10% of it), `loss` the prediction loss."""
    plan = plan or Plan()
    names = [f"{preset}-{t}-seed{s}" for s in seeds for t in ("latent", "pixels")]
    if plan.only is not None and plan.only - set(names):
        raise ValueError(f"unknown compare run(s) {sorted(plan.only - set(names))}; choose from {names}")
    overrides = {} if steps is None else {"steps": str(steps), "warmup_steps": str(steps // 10)}
    if loss != "l2":
        overrides["loss"] = loss
    suffix = "" if layers == 1 else f"-{layers}layers"
    runs = {}
    for s in seeds:
        for t in ("latent", "pixels"):
            name = f"{preset}-{t}-seed{s}"
            runs[t, s] = train_and_evaluate(out / name, preset, {"target": t, "seed": str(s), **overrides},
                                            baseline=t == "latent", layers=layers, table_only=not plan.may_train(name),
                                            record=record_path(record, name + suffix))
    readout = ("" if steps is None else f", {steps} steps") + ("" if loss == "l2" else f", {loss} loss") + \
        ("" if layers == 1 else f", last {layers} layers")
    done = [r for r in runs.values() if r is not None]
    cols = headers(done[0]["result"]) if done else headers({"ijepa": {}})
    lines = [f"| {preset}, {len(seeds)} seed(s){readout} | {' | '.join(cols)} | img/s | peak memory (MB) |",
             "|---|---|---|---|---|---|---|"]
    for name, target, key in (("I-JEPA (latent targets)", "latent", "ijepa"), ("pixel targets", "pixels", "ijepa"),
                              ("random init", "latent", "random_init"), ("raw pixels", "latent", "raw_pixels")):
        per_seed = [runs[target, s] for s in seeds if runs[target, s] is not None]
        if key == "raw_pixels":  # no training seed: every run reads out the same pixels
            per_seed = per_seed[:1]
        if not per_seed or key not in per_seed[0]["result"]:
            lines.append(f"| {name} | not run yet |")
            continue
        speed = " | " if key != "ijepa" else f"{statistics.fmean(r['img_per_s'] for r in per_seed):.0f} | " \
            f"{max(r['peak_mem_mb'] for r in per_seed):.0f}"
        seeds_note = "" if len(per_seed) == len(seeds) or key == "raw_pixels" else f" ({len(per_seed)} seed(s) so far)"
        lines.append(f"| {name}{seeds_note} | " + " | ".join(pm([r["result"][key][m] for r in per_seed])
                                                          for m in METRICS) + f" | {speed} |")
    plain = plain_fashion_runs(out.parent, None if record is None else record.parent, seeds) \
        if loss != "l2" and preset == "fashion-cpu" and steps is None and layers == 1 and done else {}
    if any(any(rows) for rows in plain.values()):
        lines += ["", f"**Verdicts** ({loss} minus the L2 runs of `study compare`; seed by seed where both rows have "
                  "the seed)", "", loss_verdicts(loss, {t: [runs[t, s] for s in seeds] for t in plain}, plain, seeds)]
    return "\n".join(lines)


def plain_fashion_runs(root: Path, record_root: Path | None, seeds: list[int]) -> dict[str, list[dict | None]]:
    """The finished runs of `study compare` on fashion-cpu (L2 loss, in root/compare/, records in
    record_root/compare/) over `seeds`, per target: {"latent": [summary or None, ...], "pixels": [...]}."""
    record = None if record_root is None else record_root / "compare"
    return {t: [train_and_evaluate(root / "compare" / f"fashion-cpu-{t}-seed{s}", "fashion-cpu", {},
                                   baseline=t == "latent", table_only=True,
                                   record=record_path(record, f"fashion-cpu-{t}-seed{s}"))
                for s in seeds] for t in ("latent", "pixels")}


def loss_verdicts(loss: str, runs: dict[str, list[dict | None]], plain: dict[str, list[dict | None]],
                  seeds: list[int]) -> str:
    """Each target trained with `loss` (runs: {target: summaries over `seeds`}) against the same target trained with
    L2 (plain: `plain_fashion_runs`), seed by seed."""
    contrasts = [("fashion-cpu", f"{label}, {loss}", runs[t], f"{label}, L2", plain[t])
                 for t, label in (("latent", "latent targets"), ("pixels", "pixel targets"))]
    return contrast_verdicts(contrasts, seeds, f"{loss} verdicts", METRICS)


# ---------------------------------------------------------------------------------------------- the distractor dial
DIAL = {"noise": (0.1, 0.2, 0.4), "clutter": (0.25, 0.5, 1.0)}  # strengths of each kind (0: no distractor)
ENCODERS = {"latent": "I-JEPA (latent targets)", "pixels": "pixel targets", "random_init": "random init",
            "raw_pixels": "raw pixels"}


def distractor_specs(kinds: tuple[str, ...] = tuple(DIAL)) -> list[str]:
    unknown = [k for k in kinds if k not in DIAL]
    if unknown:
        raise ValueError(f"unknown distractor kind(s) {unknown}; choose from {list(DIAL)}")
    return ["none"] + [f"{kind}:{s:g}" for kind in kinds for s in DIAL[kind]]


def dial_run(preset: str, target: str, spec: str, seed: int) -> str:
    """The name of a distractor-study run (its folder and record): e.g. demo-latent-noise0.2-seed1."""
    return f"{preset}-{target}-{spec.replace(':', '')}-seed{seed}"


def distractors(out: Path, preset: str = "demo", seeds: list[int] = (0, 1), plan: Plan | None = None,
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
    rows = dial_rows([s for s in summaries if s is not None])
    return dial_table(rows) + "\n\n" + dial_verdicts(rows)


def load_records(folder: str | Path) -> list[dict]:
    """Every run record of a study (RECORD/<study>/*.json), e.g. docs/studies/distractors."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


def dial_rows(summaries: list[dict]) -> list[dict]:
    """Flatten the distractor study's finished runs into one row per (distractor, encoder, seed): kind, strength,
    encoder, seed, the read-outs on corrupted images, the clean ones, and the run's collapse signals. This is what
    the table and the dial figure are drawn from."""
    rows = []
    for summary in summaries:
        result, cfg = summary["result"], summary["result"]["config"]
        d = Distractor.parse(cfg.get("distractor", "none"))
        for key in ("ijepa", "random_init", "raw_pixels"):
            if key not in result:
                continue
            encoder = cfg["target"] if key == "ijepa" else key
            clean = result.get("clean", result)[key]
            rows.append(dict(kind=d.kind if d else "none", strength=d.strength if d else 0.0, encoder=encoder,
                             seed=cfg["seed"], **{m: result[key][m] for m in METRICS},
                             **{f"clean_{m}": clean[m] for m in METRICS}, n_test=result[key]["n_test"],
                             n_10_per_class=result[key].get("n_10_per_class"), n_1pct=result[key].get("n_1pct"),
                             feat_std=summary["feat_std"] if key == "ijepa" else None,
                             erank=summary["erank"] if key == "ijepa" else None))
    return rows


def dial_settings(rows: list[dict]) -> list[tuple[str, float, str]]:
    """The distractor settings present in dial rows, clean first: (kind, strength, label such as "noise 0.2")."""
    settings = sorted({(r["kind"], r["strength"]) for r in rows}, key=lambda ks: (ks[0] != "none", ks))
    return [(k, x, "none" if k == "none" else f"{k} {x:g}") for k, x in settings]


def dial_table(rows: list[dict]) -> str:
    """One line per (distractor, encoder): mean ± std over the seeds that finished."""
    n10 = next((r["n_10_per_class"] for r in rows if r["n_10_per_class"]), "?")
    n1 = next((r["n_1pct"] for r in rows if r["n_1pct"]), "?")
    lines = [f"| distractor | encoder | seeds | linear | kNN | 10 / class ({n10} labels) | 1 % ({n1} labels) | "
             f"clean kNN | clean 10 / class | feature std | eff. rank |", "|---" * 11 + "|"]
    settings = dial_settings(rows)
    for kind, strength, spec in settings:
        for encoder, label in ENCODERS.items():
            group = [r for r in rows if (r["kind"], r["strength"], r["encoder"]) == (kind, strength, encoder)]
            if not group:
                continue
            cells = [pm([r[m] for r in group]) for m in ("linear", "knn", "linear_10_per_class", "linear_1pct",
                                                           "clean_knn", "clean_linear_10_per_class")]
            collapse = ["", ""] if encoder not in ("latent", "pixels") else \
                [f"{statistics.fmean(r['feat_std'] for r in group):.3f}",
                 f"{statistics.fmean(r['erank'] for r in group):.1f}"]
            seeds = ",".join(str(r["seed"]) for r in sorted(group, key=lambda r: r["seed"]))
            lines.append(f"| {spec} | {label} | {seeds} | " + " | ".join(cells + collapse) + " |")
    return "\n".join(lines)


READOUTS = {"knn": "kNN", "linear_10_per_class": "10 / class", "linear": "linear", "linear_1pct": "1 %"}


def gap_verdict(a: tuple[float, float], b: tuple[float, float], n_test: int, diffs: list[float],
                names: tuple[str, str]) -> tuple[float, str]:
    """Is row a ahead of row b? a, b: (mean, seed std) of one read-out in %. The gap of the means counts only beyond
    the spread: twice the combined seed std, and at least 2 standard errors of one test accuracy
    (evaluate.spread_margin). `diffs`: a - b seed by seed where both rows have the seed; one such seed makes the
    verdict that seed's only, seeds that disagree in sign make none. Returns (spread, verdict)."""
    gap = a[0] - b[0]
    spread = 100 * spread_margin(a[0] / 100, b[0] / 100, a[1] / 100, b[1] / 100, n_test)
    winner = names[0] if gap > 0 else names[1]
    if abs(gap) <= spread:
        return spread, "level: within the spread"
    if len(diffs) == 1:
        return spread, f"{winner} ahead, on this seed only"
    if any((d > 0) != (gap > 0) for d in diffs):
        return spread, "the seeds disagree"
    return spread, f"**{winner} ahead** beyond the spread"


def dial_verdicts(rows: list[dict], metrics: tuple[str, ...] = ("knn", "linear_10_per_class")) -> str:
    """Latent minus pixel targets, per distractor setting and read-out, seed by seed, with a verdict. A gap counts
    only beyond the spread: twice the combined seed std of the two rows, and at least 2 standard errors of one test
    accuracy (`gap_verdict`); a gap of one seed is said to be that seed's only."""
    lines = ["| distractor | read-out | latent − pixels, per seed | mean | spread | verdict | "
             "latent − random init |", "|---" * 7 + "|"]
    settings = dial_settings(rows)
    for kind, strength, spec in settings:
        by = {e: {r["seed"]: r for r in rows if (r["kind"], r["strength"], r["encoder"]) == (kind, strength, e)}
              for e in ("latent", "pixels", "random_init")}
        seeds = sorted(set(by["latent"]) & set(by["pixels"]))
        if not seeds:
            continue
        for m in metrics:
            lat, pix = ([100 * by[e][s][m] for s in seeds] for e in ("latent", "pixels"))
            diffs = [a - b for a, b in zip(lat, pix)]
            gap = statistics.fmean(diffs)
            spread, verdict = gap_verdict(mean_sd(lat), mean_sd(pix), by["latent"][seeds[0]]["n_test"], diffs,
                                          ("latent", "pixels"))
            rnd = [100 * (by["latent"][s][m] - by["random_init"][s][m]) for s in seeds if s in by["random_init"]]
            lines.append(f"| {spec} | {READOUTS[m]} | {', '.join(f'{d:+.1f}' for d in diffs)} | {gap:+.1f} | "
                         f"{spread:.1f} | {verdict} | " + (f"{statistics.fmean(rnd):+.1f} |" if rnd else " |"))
    return "\n".join(lines)


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
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(summary, indent=1) + "\n")
            tmp.replace(path)
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


# ------------------------------------------------------------------------------------- anti-collapse regularisers
REG_WEIGHTS = (0.01, 0.1, 1.0)  # the sweep, for each regulariser
COLLAPSE_PRONE = {  # demo-preset settings that collapsed plain I-JEPA on both seeds (ablations), and distractors
    "predictor depth 2": {"predictor_depth": "2"},
    "batch size 64": {"batch_size": "64"},
    "lr 2e-3": {"lr": "2e-3", "start_lr": "4e-4"},
    "noise 0.2": {"distractor": "noise:0.2"},
    "clutter 1.0": {"distractor": "clutter:1"},
}
REG_TABLES = ("regulariser study, fashion-cpu", "collapse-prone setting, demo")  # the titles of stages 2 and 3


def sweep_score(summary: dict) -> float:
    """How the sweep picks a regulariser's weight: the mean of kNN and the 10-per-class probe (one seed)."""
    r = summary["result"]["ijepa"]
    return (r["knn"] + r["linear_10_per_class"]) / 2


def summary_row(label: str, summaries: list[dict | None], key: str = "ijepa", seeds: int | None = None) -> str:
    """A table row: the four read-outs as mean ± std over the finished runs, then (for trained encoders) the final
    prediction loss, feature std and effective rank (means)."""
    done = [s for s in summaries if s is not None]
    if not done:
        return f"| {label} | not run yet |"
    note = "" if seeds is None or len(done) == seeds else f" ({len(done)} of {seeds} seeds so far)"
    cells = [pm([s["result"][key][m] for s in done]) for m in METRICS]
    if key == "ijepa":
        cells += [f"{statistics.fmean(s.get('pred_loss', s['loss']) for s in done):.4f}",
                  f"{statistics.fmean(s['feat_std'] for s in done):.3f}",
                  f"{statistics.fmean(s['erank'] for s in done):.1f}"]
    else:
        cells += ["", "", ""]
    return f"| {label}{note} | " + " | ".join(cells) + " |"


def contrast_verdicts(contrasts: list[tuple], seeds: list[int], title: str = "regulariser verdicts",
                      metrics: tuple[str, ...] = ("knn", "linear_10_per_class")) -> str:
    """Rows of runs against a reference row, per setting and read-out (`gap_verdict`), as a table headed `title`.
    contrasts: (setting, label, summaries over `seeds`, reference label, reference summaries over `seeds`), None
    where a run is missing (a reference with seed 0 alone, for instance); a contrast without runs is left out."""
    lines = [f"| {title} | read-out | difference | per seed | mean | spread | verdict |", "|---" * 7 + "|"]
    for setting, label, runs, ref_label, ref in contrasts:
        for m in metrics:
            mine, theirs = ({s: 100 * r["result"]["ijepa"][m] for s, r in zip(seeds, rows) if r is not None}
                            for rows in (runs, ref))
            if not mine or not theirs:
                continue
            other = mean_sd(list(theirs.values()))
            stats = mean_sd(list(mine.values()))
            gap = stats[0] - other[0]
            diffs = [mine[s] - theirs[s] for s in mine if s in theirs] or ([gap] if len(mine) == 1 else [])
            n_test = next(r for r in runs if r is not None)["result"]["ijepa"]["n_test"]
            spread, verdict = gap_verdict(stats, other, n_test, diffs, (label, ref_label))
            paired = [f"{mine[s] - theirs[s]:+.1f}" for s in mine if s in theirs]
            lines.append(f"| {setting} | {READOUTS[m]} | {label} − {ref_label} | "
                         f"{', '.join(paired) or 'unpaired'} | {gap:+.1f} | {spread:.1f} | "
                         f"{verdict} |")
    return "\n".join(lines)


def collapse_run(setting: str, reg: str, seed: int) -> str:
    """The name of a collapse-prone run of the regulariser study: reg is "none" or "<reg>-<weight>", e.g.
    demo-predictor-depth-2-vicreg-1-seed0."""
    return f"demo-{slug(setting)}-{reg}-seed{seed}"


def regularisers(out: Path, plan: Plan | None = None, record: Path | None = None, seeds: list[int] = (0, 1)) -> str:
    """VICReg and SIGReg on the context encoder's output, against plain I-JEPA (regularisers.py):
    1. a weight sweep on the demo preset (seed 0), each regulariser at REG_WEIGHTS; the best weight of each (by
       `sweep_score`) goes on; the better of the two is also tried per patch, and without the EMA teacher
       (target = the context encoder under stop-gradient: momentum 0);
    2. fashion-cpu, latent targets, each regulariser at its best weight, over `seeds`;
    3. the collapse-prone settings (COLLAPSE_PRONE) on the demo preset with the better regulariser, over `seeds`,
       and without it (seed 0; the distractor settings: both seeds, the distractor study's runs);
    then the verdicts: the regularised rows against pixel targets and plain I-JEPA (`contrast_verdicts`).
    Plain latent and pixel rows on the demo preset are the distractor study's clean runs (the same configuration),
    trained there if missing. Steps 2-3 wait until the sweep has finished."""
    plan = plan or Plan()
    dial_out = out.parent / "distractors"
    dial_record = None if record is None else record.parent / "distractors"

    def go(name: str, preset: str, overrides: dict[str, str], baseline: bool = False, shared: bool = False):
        where, rec = (dial_out, dial_record) if shared else (out, record)
        return train_and_evaluate(where / name, preset, overrides, baseline=baseline,
                                  table_only=not plan.may_train(name), record=record_path(rec, name))

    def plain(target: str, seed: int, distractor: str = "none") -> dict | None:
        return go(dial_run("demo", target, distractor, seed), "demo",
                  {"target": target, "seed": str(seed), "distractor": distractor}, baseline=target == "latent",
                  shared=True)

    def cols(title: str, runs: list[dict | None]) -> str:  # a table's header, with its low-shot probes' labels
        first = next((r for r in runs if r is not None), None)
        names = headers(first["result"] if first else {"ijepa": {}})
        return f"| {title} | {' | '.join(names)} | final prediction loss | feature std | eff. rank |"

    rule = "|---|---|---|---|---|---|---|---|"
    # 1 · the sweep
    base = {t: plain(t, 0) for t in ("latent", "pixels")}
    sweep = {(reg, w): go(f"demo-{reg}-{w:g}-seed0", "demo", {"reg": reg, "reg_weight": str(w), "seed": "0"})
             for reg in ("vicreg", "sigreg") for w in REG_WEIGHTS}
    lines = ["**1 · Weight sweep** (demo preset, seed 0)", "",
             cols("regulariser sweep, demo, seed 0", [base["latent"], *sweep.values()]), rule]
    if base["latent"] is not None:
        lines += [summary_row("random init", [base["latent"]], "random_init"),
                  summary_row("raw pixels", [base["latent"]], "raw_pixels")]
    lines += [summary_row("I-JEPA, no regulariser", [base["latent"]]), summary_row("pixel targets", [base["pixels"]])]
    lines += [summary_row(f"{reg} {w:g}", [sweep[reg, w]]) for reg, w in sweep]
    best = {}
    for reg in ("vicreg", "sigreg"):
        done = [(sweep_score(sweep[reg, w]), w) for w in REG_WEIGHTS if sweep[reg, w] is not None]
        if len(done) == len(REG_WEIGHTS):
            best[reg] = max(done)[1]
    if len(best) < 2:
        return "\n".join(lines + ["", "(the rest waits until the sweep has finished)"])
    top = max(best, key=lambda reg: sweep_score(sweep[reg, best[reg]]))
    flags = {"reg": top, "reg_weight": f"{best[top]:g}"}
    variants = {f"{top} {best[top]:g}, per patch": go(f"demo-{top}-{best[top]:g}-patch-seed0", "demo",
                                                       {**flags, "reg_on": "patch", "seed": "0"}),
                f"{top} {best[top]:g}, no EMA (momentum 0)": go(f"demo-{top}-{best[top]:g}-noema-seed0", "demo",
                                                                 {**flags, "momentum": "0", "final_momentum": "0",
                                                                  "seed": "0"})}
    lines += [summary_row(label, [s]) for label, s in variants.items()]
    lines += ["", f"Best weight by the mean of kNN and the 10-per-class probe: " +
              ", ".join(f"{reg} {w:g}" for reg, w in best.items()) + f"; the better of the two: {top}."]
    # 2 · fashion-cpu
    fashion = {reg: [go(f"fashion-cpu-{reg}-{best[reg]:g}-seed{s}", "fashion-cpu",
                        {"reg": reg, "reg_weight": f"{best[reg]:g}", "seed": str(s)}, baseline=reg == top)
                     for s in seeds] for reg in best}
    plain_fashion = plain_fashion_runs(out.parent, None if record is None else record.parent, seeds)
    lines += ["", f"**2 · Fashion-MNIST** (fashion-cpu preset, seeds {','.join(map(str, seeds))})", "",
              cols(REG_TABLES[0], [r for runs in fashion.values() for r in runs]), rule,
              summary_row("random init", fashion[top], "random_init", len(seeds)),
              summary_row("raw pixels", fashion[top][:1], "raw_pixels"),
              summary_row("I-JEPA, no regulariser", plain_fashion["latent"], seeds=len(seeds)),
              summary_row("pixel targets", plain_fashion["pixels"], seeds=len(seeds))]
    lines += [summary_row(f"{reg} {best[reg]:g}", fashion[reg], seeds=len(seeds)) for reg in best]
    # 3 · collapse-prone settings
    lines += ["", f"**3 · Collapse-prone settings** (demo preset; {top} {best[top]:g})", "",
              cols(REG_TABLES[1], [base["latent"], *sweep.values()]), rule]
    top_label = f"{top} {best[top]:g}"
    contrasts = []
    for reg in best:
        for ref_label, t in (("pixel targets", "pixels"), ("no regulariser", "latent")):
            contrasts.append(("fashion-cpu", f"{reg} {best[reg]:g}", fashion[reg], ref_label, plain_fashion[t]))
    for setting, overrides in COLLAPSE_PRONE.items():
        if "distractor" in overrides:
            spec = overrides["distractor"]
            without = [plain("latent", s, spec) for s in seeds]
            pixels = [plain("pixels", s, spec) for s in seeds]
        else:
            without = [go(collapse_run(setting, "none", 0), "demo", {**overrides, "seed": "0"})]
            pixels = []
        with_reg = [go(collapse_run(setting, f"{top}-{best[top]:g}", s), "demo", {**overrides, **flags, "seed": str(s)})
                    for s in seeds]
        lines += [summary_row(f"{setting}, no regulariser", without),
                  summary_row(f"{setting}, {top_label}", with_reg, seeds=len(seeds))]
        if pixels:
            lines.append(summary_row(f"{setting}, pixel targets", pixels))
            contrasts.append((setting, top_label, with_reg, "pixel targets", pixels))
        contrasts.append((setting, top_label, with_reg, "no regulariser", without))
    lines += ["", "**Verdicts** (regularised latent targets minus the reference row; seed by seed where both rows "
              "have the seed)", "", contrast_verdicts(contrasts, seeds)]
    return "\n".join(lines)


def regulariser_groups(path: str | Path) -> dict[str, dict[str, dict[str, str]]]:
    """The rows of stages 2 and 3 of the regulariser study's table (`regularisers`, saved at `path`), grouped by
    setting: {"fashion-cpu" or a COLLAPSE_PRONE setting: {variant: {column: cell}}}, variants named as in the
    verdicts ("no regulariser", "pixel targets", "vicreg 1", ...); the baselines (random init, raw pixels) left out."""
    tables = {t["title"]: t["rows"] for t in markdown_tables(path)}
    groups = {}
    for title in REG_TABLES:
        for label, row in tables.get(title, {}).items():
            label = re.sub(r" \(.*\)$", "", label)  # drop "(1 of 2 seeds so far)"
            setting, variant = ("fashion-cpu", label.removeprefix("I-JEPA, ")) if title == REG_TABLES[0] \
                else label.rsplit(", ", 1)  # "<setting>, <variant>"
            if variant not in ("random init", "raw pixels"):
                groups.setdefault(setting, {})[variant] = row
    return groups


def collapse_prone_runs(record: str | Path, seed: int = 0) -> dict[str, dict[str, dict]]:
    """The finished runs of the collapse-prone settings (COLLAPSE_PRONE) for one seed, read from the records under
    `record` (docs/studies): {setting: {"no regulariser": summary, "<reg> <weight>": summary, ...}}. The plain runs
    of the distractor settings are the distractor study's."""
    record = Path(record)
    out = {}
    for setting, overrides in COLLAPSE_PRONE.items():
        if "distractor" in overrides:
            plain = record / "distractors" / f"{dial_run('demo', 'latent', overrides['distractor'], seed)}.json"
        else:
            plain = record / "regularisers" / f"{collapse_run(setting, 'none', seed)}.json"
        paths = {"no regulariser": plain}
        for path in sorted((record / "regularisers").glob(f"{collapse_run(setting, '*', seed)}.json")):
            _, reg, weight, _ = path.stem.rsplit("-", 3)  # demo-<setting>-<reg>-<weight>-seed<N>
            if reg in ("vicreg", "sigreg"):
                paths[f"{reg} {weight}"] = path
        out[setting] = {label: json.loads(path.read_text()) for label, path in paths.items() if path.exists()}
    return out

# ------------------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("study", choices=["ablations", "compare", "distractors", "regularisers"])
    p.add_argument("--out", default="runs/study", help="where the run directories go")
    p.add_argument("--record", default="docs/studies", help="where finished runs' records, tables and figures go "
                                                            "(committed; 'none': keep nothing there)")
    p.add_argument("--preset", help="compare: the preset to train (default fashion-cpu); distractors: default demo")
    p.add_argument("--seeds", default="0,1", help="compare, distractors: comma-separated seeds")
    p.add_argument("--seed", type=int, default=0, help="ablations: the seed of every run (seed 0: ablations/, "
                                                       "others: ablations-seedN/)")
    p.add_argument("--layers", type=int, default=1, choices=[1, 4],
                   help="compare: read out the last block or the last 4 (evaluates finished runs again)")
    p.add_argument("--steps", type=int, help="compare: train this many steps instead of the preset's "
                                             "(runs in compare-Nsteps/)")
    p.add_argument("--loss", default="l2", choices=["l2", "smooth_l1"], help="compare: the prediction loss "
                                                                             "(smooth_l1: runs in compare-smooth_l1/)")
    p.add_argument("--table-only", action="store_true", help="train nothing, tabulate the finished runs")
    p.add_argument("--only", help="comma-separated run slugs to train, e.g. lr-3e-4,ema-0.999-1 (ablations) or "
                                  "fashion-cpu-latent-seed1 (compare)")
    p.add_argument("--shard", default="0/1", help="I/N: train only every N-th run, starting at the I-th (two "
                                                  "shards, 0/2 and 1/2, can run side by side)")
    p.add_argument("--kinds", default=",".join(DIAL), help="distractors: comma-separated kinds to run")
    p.add_argument("--list", action="store_true", help="print the study's runs and train nothing")
    p.add_argument("--diagnose", action="store_true", help="distractors: add what the read-outs see (`diagnose`) to "
                                                           "the records of finished runs in --out; train nothing")
    args = p.parse_args(argv)
    try:
        i, n = (int(v) for v in args.shard.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        p.error(f"--shard {args.shard!r}: write I/N with 0 <= I < N, e.g. 0/2")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds {args.seeds!r}: write comma-separated integers, e.g. 0,1")
    if args.preset is not None and args.preset not in PRESETS:
        p.error(f"--preset {args.preset!r}: choose one of {sorted(PRESETS)}")
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be at least 1, got {args.steps}")
    listing = [] if args.list else None
    plan = Plan(args.table_only, set(args.only.split(",")) if args.only else None, (i, n), listing=listing)
    if args.study == "ablations":
        name = "ablations" if args.seed == 0 else f"ablations-seed{args.seed}"
        runs_name = name
    elif args.study == "compare":
        runs_name = "compare" + ("" if args.steps is None else f"-{args.steps}steps") + \
            ("" if args.loss == "l2" else f"-{args.loss}")
        name = runs_name if args.layers == 1 else f"{runs_name}-{args.layers}layers"
    else:
        runs_name = name = args.study
    out = Path(args.out) / runs_name
    record = None if args.record == "none" else Path(args.record) / runs_name
    if args.diagnose:
        if args.study != "distractors" or record is None:
            p.error("--diagnose is for the distractors study, with its --record folder")
        with user_errors():
            table = diagnosis_table(diagnose_records(out, record))
        (record.parent / f"{name}-diagnosis.md").write_text(table + "\n")
        print(table)
        return
    with user_errors():
        if args.study == "ablations":
            table = ablations(out, plan, args.seed, record)
        elif args.study == "compare":
            table = compare(out, args.preset or "fashion-cpu", seeds, args.layers, args.steps, args.loss, plan, record)
        elif args.study == "distractors":
            table = distractors(out, args.preset or "demo", seeds, plan, record, tuple(args.kinds.split(",")))
        else:
            table = regularisers(out, plan, record, seeds)
    if listing is not None:
        print("\n".join(listing))
        return
    where = out.parent if record is None else record.parent
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{name}.md").write_text(table + "\n")
    if args.study == "distractors":
        rows = dial_rows(load_records(record) if record is not None else [])
        if rows:
            plot_dial(rows, where / f"{name}.png")
    print(table)


if __name__ == "__main__":
    main()
