"""The studies' tables: mean ± std over seeds, the read-outs' column names, a row of run summaries, and the one rule
for calling a gap between two rows (`judge_gap`: only beyond the spread), applied row against row
(`contrast_table`), and the outcomes said as sentences (`sentence`: from a study's table of differences,
`read_differences`, or from two runs read out side by side, `readout_gaps`)."""
from __future__ import annotations

import statistics
from typing import NamedTuple

from ..evaluate import METRICS, spread_of
from ..probes import spread_margin

READOUTS = {"knn": "kNN", "linear_10_per_class": "10 / class", "linear": "linear", "linear_1pct": "1 %",
            "finetune_1pct": "fine-tuned 1 %", "knn_10_per_class": "kNN, 10 / class"}


def mean_sd(values: list[float]) -> tuple[float, float]:
    """The mean and the seed std (0 for one seed) of a row's values."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pm(values: list[float]) -> str:
    """Mean ± std over seeds, in %."""
    mean, std = mean_sd(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if len(values) > 1 else f"{100 * mean:.1f}"


def whitened(result: dict) -> bool:
    """Was this eval.json read out with the earlier, PCA-whitened linear probes? They are blind to which directions
    of the features carry the variance, so they cannot see what pretraining learned (evaluate.py); a table built
    from such runs says so in its header."""
    return "protocol" in result and "linear_whitened" not in result["protocol"]


def one_protocol(summaries: list[dict | None]) -> list[dict | None]:
    """A row's runs, never mixing protocols: where some were read out with the current probes, the ones still read
    out with the whitened probes are left out (None); a row of whitened runs alone is kept as it is."""
    if all(s is None or whitened(s["result"]) for s in summaries):
        return summaries
    return [None if s is None or whitened(s["result"]) else s for s in summaries]


def as_whitened(summary: dict | None) -> dict | None:
    """A run read out with the current probes, seen as the whitened protocol saw it, so that it can be judged against
    (or tabulated beside) a run that was not read out again: that protocol's linear probe is the diagnostic
    `linear_whitened`, its 10-per-class probe the diagnostic's first label set (the same labels, seed and fit), kNN is
    the same in both; it had no 1 % equivalent and no fine-tuning. Every encoder of the run (the trained one, and the
    baselines) is seen so."""
    if summary is None or whitened(summary["result"]):
        return summary
    result = dict(summary["result"], protocol={})
    for key in ("ijepa", "random_init", "raw_pixels"):
        if key in result:
            r = result[key]
            first = ((r.get("details") or {}).get("linear_whitened_10_per_class") or {}).get("draws", [None])[0]
            result[key] = {**r, "linear": r.get("linear_whitened"), "linear_10_per_class": first,
                           "linear_1pct": None, "finetune_1pct": None}
    return {**summary, "result": result}


def table_protocol(runs: list[dict | None]) -> list[dict | None]:
    """A table's runs, all in one protocol: where any was read out with the whitened probes and not again, every run
    is seen as that protocol saw it (`as_whitened`), so that no column holds two kinds of probe."""
    if any(r is not None and whitened(r["result"]) for r in runs):
        return [as_whitened(r) for r in runs]
    return runs


def readout_name(metric: str, old: bool) -> str:
    """A read-out's name in a table; the probes of runs read out with the whitened protocol say so (kNN is the same
    in both protocols)."""
    return READOUTS[metric] + (" (whitened)" if old and metric not in ("knn", "finetune_1pct") else "")


def columns(result: dict) -> tuple[str, ...]:
    """The read-outs of a table whose runs were read out like `result`: the four probes, and the 1 % fine-tuning
    where the protocol has it (not the whitened one)."""
    return METRICS if whitened(result) else METRICS + ("finetune_1pct",)


def representative(summaries: list[dict | None]) -> dict:
    """The result a table's header is built from: the first run read out with the current probes, else the first
    finished run, else an empty one."""
    done = [s["result"] for s in summaries if s is not None]
    return next((r for r in done if not whitened(r)), done[0] if done else {"ijepa": {}})


def headers(result: dict) -> list[str]:
    """The read-outs' column names (`columns`), with how many labels the low-shot probes had, and "whitened" where
    the runs were read out with the whitened probes."""
    r, w = result["ijepa"], ", whitened" if whitened(result) else ""
    names = [f"linear{' (whitened)' if w else ''}", "kNN",
             f"10 / class ({r['n_10_per_class']} labels{w})" if "n_10_per_class" in r else "10 / class",
             f"1 % ({r['n_1pct']} labels{w})" if "n_1pct" in r else "1 %"]
    tuned = "fine-tuned 1 %" + (f" ({r['n_1pct']} labels)" if "n_1pct" in r else "")
    return names + ([tuned] if len(columns(result)) > len(METRICS) else [])


def cells(rows: list[dict], metrics: tuple[str, ...]) -> list[str]:
    """One table cell per read-out: mean ± std over the result rows (one per seed), "n/a" where a row lacks it
    (nothing to fine-tune in raw pixels; a run read out with the whitened probes has no fine-tuning)."""
    return ["n/a" if any(r.get(m) is None for r in rows) else pm([r[m] for r in rows]) for m in metrics]


def whitened_note(rows: dict[str, list[dict | None]], table: dict) -> list[str]:
    """Lines to put under a table whose header (`table`, its representative result) uses the current probes but some
    of whose rows ({label: summaries}) were read out with the whitened ones: those rows, named."""
    if whitened(table):
        return []
    old = [label for label, runs in rows.items() if any(s is not None and whitened(s["result"]) for s in runs)]
    mixed = [label for label in old if any(s is not None and not whitened(s["result"]) for s in rows[label])]
    lines = ["", "Rows read out with the earlier, PCA-whitened probes (their linear and low-shot cells are whitened "
                 "probes, blind to which feature directions carry the variance; no fine-tuning): "
                 + ", ".join(label for label in old if label not in mixed) + "."] if set(old) - set(mixed) else []
    if mixed:
        lines += ["", "Not yet read out again with the current probes, so left out of their rows for now: some seeds "
                  "of " + ", ".join(mixed) + "."]
    return lines


def summary_row(label: str, summaries: list[dict | None], key: str = "ijepa", seeds: int | None = None, *,
                metrics: tuple[str, ...]) -> str:
    """A table row: the read-outs (`metrics`: the columns of the table's header, `columns`) as mean ± std over the
    finished runs, then (for trained encoders) the final prediction loss, feature std and effective rank (means)."""
    done = [s for s in one_protocol(summaries) if s is not None]
    if not done:
        return f"| {label} | not run yet |"
    note = "" if seeds is None or len(done) == seeds else f" ({len(done)} of {seeds} seeds so far)"
    row = cells([s["result"][key] for s in done], metrics)
    if key == "ijepa":
        row += [f"{statistics.fmean(s.get('pred_loss', s['loss']) for s in done):.4f}",
                  f"{statistics.fmean(s['feat_std'] for s in done):.3f}",
                  f"{statistics.fmean(s['erank'] for s in done):.1f}"]
    else:
        row += ["", "", ""]
    return f"| {label}{note} | " + " | ".join(row) + " |"


def judge_gap(a: tuple[float, float], b: tuple[float, float], n_test: int, diffs: list[float],
                names: tuple[str, str]) -> tuple[float, str]:
    """Is row a ahead of row b? a, b: (mean, seed std) of one read-out in %. The gap of the means counts only beyond
    the spread: twice the combined seed std, and at least 2 standard errors of one test accuracy
    (probes.spread_margin). `diffs`: a - b seed by seed where both rows have the seed; one such seed makes the
    outcome that seed's only, seeds that disagree in sign make none. Returns (spread, outcome)."""
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


def as_encoder(summaries: list[dict | None], key: str) -> list[dict | None]:
    """Runs' summaries with their `key` read-out (e.g. "random_init") in the place of the trained encoder's, so that
    `contrast_table` can set a baseline against a trained row."""
    return [None if s is None else {**s, "result": {**s["result"], "ijepa": s["result"][key]}} for s in summaries]


DIFFERENCE_COLUMNS = ["read-out", "difference", "per seed", "mean", "spread", "outcome"]


def contrast_table(contrasts: list[tuple], seeds: list[int], title: str = "differences",
                      metrics: tuple[str, ...] = ("knn", "linear_10_per_class")) -> str:
    """Rows of runs against a reference row, per setting and read-out (`judge_gap`), as a table headed `title`.
    contrasts: (setting, label, summaries over `seeds`, reference label, reference summaries over `seeds`), None
    where a run is missing (a reference with seed 0 alone, for instance); a contrast without runs is left out."""
    lines = [f"| {title} | {' | '.join(DIFFERENCE_COLUMNS)} |", "|---" * 7 + "|"]
    for setting, label, runs, ref_label, ref in contrasts:
        if any(r is not None and not whitened(r["result"]) for r in runs) != \
                any(r is not None and not whitened(r["result"]) for r in ref):  # one row not read out again yet:
            runs, ref = [as_whitened(r) for r in runs], [as_whitened(r) for r in ref]  # judge both as it was
        runs, ref = one_protocol(runs), one_protocol(ref)
        for m in metrics:
            mine, theirs = ({s: 100 * r["result"]["ijepa"][m] for s, r in zip(seeds, rows)
                             if r is not None and r["result"]["ijepa"].get(m) is not None} for rows in (runs, ref))
            if not mine or not theirs:
                continue
            other = mean_sd(list(theirs.values()))
            stats = mean_sd(list(mine.values()))
            gap = stats[0] - other[0]
            diffs = [mine[s] - theirs[s] for s in mine if s in theirs] or ([gap] if len(mine) == 1 else [])
            n_test = next(r for r in runs if r is not None)["result"]["ijepa"]["n_test"]
            spread, outcome = judge_gap(stats, other, n_test, diffs, (label, ref_label))
            paired = [f"{mine[s] - theirs[s]:+.1f}" for s in mine if s in theirs]
            old = any(whitened(r["result"]) for r in (*runs, *ref) if r is not None)
            lines.append(f"| {setting} | {readout_name(m, old)} | {label} − {ref_label} | "
                         f"{', '.join(paired) or 'unpaired'} | {gap:+.1f} | {spread:.1f} | "
                         f"{outcome} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ outcomes as sentences
class Gap(NamedTuple):
    """One read-out of one row against a reference row: the gap in points and which side it falls on ("ahead" or
    "behind": beyond the spread, on every seed; "one seed": beyond it where only one seed has both rows, not yet a
    result; "level": within it, or the seeds disagree)."""
    readout: str
    gap: float
    side: str


def sentence(label: str, ref: str, gaps: list[Gap]) -> str:
    """A contrast as one sentence: where `label` is ahead of `ref`, behind it and level, with the gaps in points."""
    said = {side: ", ".join(f"{g.readout} ({g.gap:+.1f})" for g in gaps if g.side == side) or "no read-out"
            for side in ("ahead", "behind", "one seed", "level")}
    one_seed = "" if said["one seed"] == "no read-out" else \
        f"; beyond the spread on one seed only (not yet a result) on {said['one seed']}"
    return (f"**{label}** against **{ref}**: ahead beyond the spread on {said['ahead']}; behind on {said['behind']}"
            f"{one_seed}; level on {said['level']}.")


def read_differences(markdown: str) -> dict[tuple[str, str, str], list[Gap]]:
    """The tables of differences (`contrast_table`) in a study's markdown, e.g. the text of
    docs/studies/regularisers.md: {(setting, row, reference row): [one Gap per read-out]}."""
    out, in_table = {}, False
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            in_table = False
        elif cells[1:] == DIFFERENCE_COLUMNS:
            in_table = True
        elif in_table and not line.startswith("|---"):
            setting, readout, difference, _, mean, _, outcome = cells
            label, ref = difference.split(" − ")
            side = "one seed" if "on this seed only" in outcome else "level" if "beyond the spread" not in outcome \
                else "ahead" if outcome.startswith(f"**{label} ahead**") else "behind"
            out.setdefault((setting, label, ref), []).append(Gap(readout, float(mean), side))
    return out


def readout_gaps(a: dict, b: dict, n_test: int, metrics: tuple[str, ...] = METRICS) -> list[Gap]:
    """Two runs' read-outs side by side (result rows of eval.json, one seed each), read-out by read-out: a gap counts
    beyond twice the combined std over label draws and 2 standard errors of a test accuracy (`spread_margin`);
    read-outs either row lacks are left out."""
    gaps = []
    for m in metrics:
        if a.get(m) is None or b.get(m) is None:
            continue
        gap = 100 * (a[m] - b[m])
        margin = 100 * spread_margin(a[m], b[m], spread_of(a, m) or 0.0, spread_of(b, m) or 0.0, n_test)
        gaps.append(Gap(READOUTS[m], gap, "level" if abs(gap) <= margin else "ahead" if gap > 0 else "behind"))
    return gaps
