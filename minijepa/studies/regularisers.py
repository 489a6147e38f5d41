"""The regulariser study: VICReg and SIGReg against collapse.

The regularisers of minijepa/regularisers.py: a weight sweep on `demo`, the best weights on `fashion-cpu`, and the
settings where I-JEPA (nearly) collapsed, with and without, judged against pixel targets and I-JEPA without a
regulariser."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ..results import markdown_tables
from .ablations import ABLATIONS, ablation, seed_folder
from .compare import plain_fashion_runs
from .distractors import dial_run
from .runs import Plan, folders, record_path, seed_list, slug, train_and_evaluate, write_table
from .tables import (as_encoder, columns, contrast_table, headers, representative, summary_row, table_protocol,
                     whitened_note)

REG_WEIGHTS = (0.01, 0.1, 1.0)  # the sweep, for each regulariser
COLLAPSE_SETTINGS = {  # demo settings where I-JEPA without a regulariser (nearly) collapsed on both seeds
    **{name: ABLATIONS[name] for name in ("predictor depth 2", "batch size 64", "lr 2e-3")},
    "noise 0.2": {"distractor": "noise:0.2"},
    "clutter 1.0": {"distractor": "clutter:1"},
}
REG_TABLES = ("regulariser study, fashion-cpu", "where I-JEPA (nearly) collapsed, demo")  # the titles of stages 2 and 3


def sweep_score(summary: dict) -> float:
    """How the sweep picks a regulariser's weight: the mean of kNN and the 10-per-class probe (one seed)."""
    r = summary["result"]["ijepa"]
    return (r["knn"] + r["linear_10_per_class"]) / 2


def pick_weight(sweep: dict[float, dict]) -> float:
    """One regulariser's pick from its sweep {weight: run summary}: the smallest weight whose `sweep_score` is within
    one standard error of one test accuracy of the best score. One seed cannot tell apart scores closer than that, and
    the mildest term that does as well departs least from the paper's recipe (the probe picks its lambda alike)."""
    scores = {w: sweep_score(s) for w, s in sweep.items()}
    best = max(scores.values())
    return min(w for w, score in scores.items() if score >= best - pick_tolerance(sweep))


def pick_tolerance(sweep: dict[float, dict]) -> float:
    """One standard error of one test accuracy at the sweep's best score: sqrt(p (1 - p) / n_test)."""
    best = max(sweep_score(s) for s in sweep.values())
    return (best * (1 - best) / next(iter(sweep.values()))["result"]["ijepa"]["n_test"]) ** 0.5


def collapse_run(setting: str, reg: str, seed: int) -> str:
    """The name of a regularised run in one of the COLLAPSE_SETTINGS: reg is "<reg>-<weight>", e.g.
    demo-predictor-depth-2-vicreg-1-seed0."""
    return f"demo-{slug(setting)}-{reg}-seed{seed}"


def study(out: Path, plan: Plan | None = None, record: Path | None = None, seeds: list[int] = (0, 1)) -> str:
    """VICReg and SIGReg on the context encoder's output, against I-JEPA without one (minijepa/regularisers.py):
    1. a weight sweep on the demo preset (seed 0), each regulariser at REG_WEIGHTS; the pick of each (`pick_weight`)
       goes on; the better of the two is also tried per patch, and without the EMA teacher
       (target = the context encoder under stop-gradient: momentum 0);
    2. fashion-cpu, latent targets, each regulariser at its pick, over `seeds`;
    3. the settings where I-JEPA (nearly) collapsed (COLLAPSE_SETTINGS) on the demo preset with the better regulariser, over `seeds`,
       and without it (the ablation and distractor studies' runs);
    then the outcomes: the regularised rows against pixel targets and I-JEPA without a regulariser (`contrast_table`).
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

    def cols(title: str, runs: list[dict | None]) -> tuple[str, tuple[str, ...]]:
        """A table's header and rule, and the read-outs its rows show (`columns`: with the fine-tuning or not)."""
        result = representative(runs)
        names = headers(result)
        return f"| {title} | {' | '.join(names)} | final prediction loss | feature std | eff. rank |\n" + \
            "|---" * (len(names) + 4) + "|", columns(result)

    # 1 · the sweep (one protocol per table: `table_protocol`)
    base = {t: plain(t, 0) for t in ("latent", "pixels")}
    sweep = {(reg, w): go(f"demo-{reg}-{w:g}-seed0", "demo", {"reg": reg, "reg_weight": str(w), "seed": "0"})
             for reg in ("vicreg", "sigreg") for w in REG_WEIGHTS}
    base = dict(zip(base, table_protocol([*base.values(), *sweep.values()])))
    header, metrics = cols("regulariser sweep, demo, seed 0", [base["latent"], *sweep.values()])
    lines = ["**1 · Weight sweep** (demo preset, seed 0)", "", header]
    if base["latent"] is not None:
        lines += [summary_row("random init", [base["latent"]], "random_init", metrics=metrics),
                  summary_row("raw pixels", [base["latent"]], "raw_pixels", metrics=metrics)]
    lines += [summary_row("I-JEPA, no regulariser", [base["latent"]], metrics=metrics),
              summary_row("pixel targets", [base["pixels"]], metrics=metrics)]
    lines += [summary_row(f"{reg} {w:g}", [sweep[reg, w]], metrics=metrics) for reg, w in sweep]
    best = {reg: pick_weight({w: sweep[reg, w] for w in REG_WEIGHTS}) for reg in ("vicreg", "sigreg")
            if all(sweep[reg, w] is not None for w in REG_WEIGHTS)}
    if len(best) < 2:
        return "\n".join(lines + ["", "(the rest waits until the sweep has finished)"])
    top = max(best, key=lambda reg: sweep_score(sweep[reg, best[reg]]))
    flags = {"reg": top, "reg_weight": f"{best[top]:g}"}
    variants = {f"{top} {best[top]:g}, per patch": go(f"demo-{top}-{best[top]:g}-patch-seed0", "demo",
                                                       {**flags, "reg_on": "patch", "seed": "0"}),
                f"{top} {best[top]:g}, no EMA (momentum 0)": go(f"demo-{top}-{best[top]:g}-noema-seed0", "demo",
                                                                 {**flags, "momentum": "0", "final_momentum": "0",
                                                                  "seed": "0"})}
    lines += [summary_row(label, [s], metrics=metrics) for label, s in variants.items()]
    scores = {reg: ", ".join(f"{w:g}: {100 * sweep_score(sweep[reg, w]):.2f}" for w in REG_WEIGHTS) +
              f"; one standard error {100 * pick_tolerance({w: sweep[reg, w] for w in REG_WEIGHTS}):.2f}"
              for reg in best}
    lines += ["", "Pick: the smallest weight within one test standard error of the best mean of kNN and the "
              "10-per-class probe (" + "; ".join(f"{reg} {text}" for reg, text in scores.items()) + "): " +
              ", ".join(f"{reg} {w:g}" for reg, w in best.items()) + f"; the better of the two: {top}."]
    # 2 · fashion-cpu
    fashion = {reg: [go(f"fashion-cpu-{reg}-{best[reg]:g}-seed{s}", "fashion-cpu",
                        {"reg": reg, "reg_weight": f"{best[reg]:g}", "seed": str(s)}, baseline=reg == top)
                     for s in seeds] for reg in best}
    plain_fashion = plain_fashion_runs(out.parent, None if record is None else record.parent, seeds)
    trained = {"I-JEPA, no regulariser": plain_fashion["latent"], "pixel targets": plain_fashion["pixels"],
               **{f"{reg} {best[reg]:g}": fashion[reg] for reg in best}}
    table = representative([r for runs in trained.values() for r in runs])
    header, metrics = cols(REG_TABLES[0], [r for runs in trained.values() for r in runs])
    lines += ["", f"**2 · Fashion-MNIST** (fashion-cpu preset, seeds {','.join(map(str, seeds))})", "", header,
              summary_row("random init", fashion[top], "random_init", len(seeds), metrics=metrics),
              summary_row("raw pixels", fashion[top][:1], "raw_pixels", metrics=metrics)]
    lines += [summary_row(label, runs, seeds=len(seeds), metrics=metrics) for label, runs in trained.items()]
    lines += whitened_note(trained, table)
    fashion_contrasts = [("fashion-cpu", f"{reg} {best[reg]:g}", fashion[reg], ref_label, ref)
                         for reg in best for ref_label, ref in (("random init", as_encoder(fashion[top], "random_init")),
                                                                ("pixel targets", plain_fashion["pixels"]),
                                                                ("no regulariser", plain_fashion["latent"]))]
    lines += ["", "**Differences on Fashion-MNIST** (regularised latent targets minus the reference row; seed by seed "
              "where both rows have the seed)", "",
              contrast_table(fashion_contrasts, seeds, "regulariser differences, fashion-cpu", metrics)]
    # 3 · the settings where I-JEPA (nearly) collapsed
    header, metrics = cols(REG_TABLES[1], [base["latent"], *sweep.values()])
    lines += ["", f"**3 · Settings where I-JEPA (nearly) collapsed** (demo preset; {top} {best[top]:g})", "", header]
    top_label = f"{top} {best[top]:g}"
    contrasts = []
    for setting, overrides in COLLAPSE_SETTINGS.items():
        if "distractor" in overrides:
            spec = overrides["distractor"]
            without = [plain("latent", s, spec) for s in seeds]
            pixels = [plain("pixels", s, spec) for s in seeds]
        else:  # the ablation study's runs of this knob
            without = [ablation(out.parent, None if record is None else record.parent, setting, s, plan,
                                listed_as=f"{slug(setting)}-seed{s}") for s in seeds]
            pixels = []
        with_reg = [go(collapse_run(setting, f"{top}-{best[top]:g}", s), "demo", {**overrides, **flags, "seed": str(s)})
                    for s in seeds]
        seen = table_protocol([*sweep.values(), *with_reg, *without, *pixels])[len(sweep) + len(with_reg):]
        without, pixels = seen[:len(without)], seen[len(without):]  # one protocol for the whole table
        lines += [summary_row(f"{setting}, no regulariser", without, metrics=metrics),
                  summary_row(f"{setting}, {top_label}", with_reg, seeds=len(seeds), metrics=metrics)]
        if pixels:
            lines.append(summary_row(f"{setting}, pixel targets", pixels, metrics=metrics))
            contrasts.append((setting, top_label, with_reg, "pixel targets", pixels))
        contrasts.append((setting, top_label, with_reg, "no regulariser", without))
    lines += ["", "**Differences where I-JEPA (nearly) collapsed** (regularised latent targets minus the reference row; "
              "seed by seed where both rows have the seed)", "",
              contrast_table(contrasts, seeds, "regulariser differences, demo")]
    return "\n".join(lines)


def regulariser_groups(path: str | Path) -> dict[str, dict[str, dict[str, str]]]:
    """The rows of stages 2 and 3 of the regulariser study's table (`study`, saved at `path`), grouped by setting:
    {"fashion-cpu" or a COLLAPSE_SETTINGS setting: {variant: {column: cell}}}, variants named as in the outcomes
    ("no regulariser", "pixel targets", "vicreg 1", ...); the baselines (random init, raw pixels) left out."""
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


def collapse_setting_runs(record: str | Path, seed: int = 0) -> dict[str, dict[str, dict]]:
    """The finished runs of the COLLAPSE_SETTINGS for one seed, read from the records under
    `record` (docs/studies): {setting: {"no regulariser": summary, "<reg> <weight>": summary, ...}}. The plain runs
    are the ablation and distractor studies'."""
    record = Path(record)
    out = {}
    for setting, overrides in COLLAPSE_SETTINGS.items():
        if "distractor" in overrides:
            plain = record / "distractors" / f"{dial_run('demo', 'latent', overrides['distractor'], seed)}.json"
        else:
            plain = record / seed_folder(seed) / f"{slug(setting)}.json"
        paths = {"no regulariser": plain}
        for path in sorted((record / "regularisers").glob(f"{collapse_run(setting, '*', seed)}.json")):
            _, reg, weight, _ = path.stem.rsplit("-", 3)  # demo-<setting>-<reg>-<weight>-seed<N>
            if reg in ("vicreg", "sigreg"):
                paths[f"{reg} {weight}"] = path
        out[setting] = {label: json.loads(path.read_text()) for label, path in paths.items() if path.exists()}
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=seed_list, default=[0, 1],
                   help="comma-separated seeds of stages 2 and 3 (default 0,1; the sweep: seed 0)")
    p.set_defaults(command=command)


def command(args: argparse.Namespace, plan: Plan) -> None:
    """`python -m minijepa.studies regularisers`: writes RECORD/regularisers.md."""
    out, record = folders(args, "regularisers")
    table = study(out, plan, record, args.seeds)
    if plan.listing is None:
        write_table(args, "regularisers", table)
