"""The studies behind docs/results.md, one module each: `python -m minijepa.studies STUDY [options]`.

    ablations     the `demo` preset (embedded Fashion-MNIST subset), one knob changed at a time (target
                  normalisation, EMA momentum, learning rate down and up, predictor depth and width, crop scale,
                  batch size, schedule length, patch-embedding init)
                  (`--seed N`: the same rows with another seed; `--only SLUG,...`: train just those rows)
    compare       a preset (default `fashion-cpu`) with latent targets vs pixel targets vs random init, over seeds
                  (`--layers 4`: read out the last 4 blocks instead of the last one; `--steps N`: a longer or shorter
                  schedule; `--loss smooth_l1`: the reference code's loss instead of the paper's L2, judged against
                  the L2 runs seed by seed)
    distractors   latent vs pixel targets as unpredictable detail is turned up (minijepa/distractors.py): i.i.d. noise
                  and photo clutter at three strengths each, and none, over seeds, on the `demo` preset; draws the
                  dial figure (distractors.png)
    regularisers  VICReg and SIGReg against collapse (minijepa/regularisers.py): a weight sweep on `demo`, the best
                  weights on `fashion-cpu`, and the settings where I-JEPA (nearly) collapsed, with and without,
                  judged against pixel targets

Every run is a plain `python -m minijepa.train ...` followed by `python -m minijepa.evaluate ...` in a subprocess,
and the command lines are printed, so any row can be reproduced by hand. Each finished run leaves a small record
(its read-outs, final loss, collapse signals and their trace over the steps) in RECORD/<study>/<run>.json
(`--record`, default docs/studies/, committed with the repo): runs with a record, or with a finished run directory,
are never trained again, so an interrupted study continues where it stopped, on this machine or another.
`--shard I/N` trains every N-th run only (two shards side by side, one CPU thread each); `--list` prints the runs
and trains nothing. The result is a markdown table, printed and written to RECORD/<study>.md (OUT/<study>.md with
`--record none`).

In code: each study is a module (its runs, its table, its options); runs.py runs and records a run (`Plan`,
`train_and_evaluate`, `load_records`), tables.py writes the tables (`pm`, `summary_row`) and holds the one rule for
a gap between two rows (`judge_gap`: only beyond the spread); __main__.py is the command line.
"""
from .distractors import (diagnose, diagnose_records, diagnosis_table, dial_contrasts, dial_differences, dial_gaps,
                          dial_left_out, dial_rows, dial_run, dial_table)
from .regularisers import collapse_setting_runs, regulariser_groups
from .runs import Plan, load_records, train_and_evaluate
from .tables import Gap, contrast_table, judge_gap, mean_sd, pm, read_differences, readout_gaps, sentence, summary_row

__all__ = ["Gap", "Plan", "collapse_setting_runs", "contrast_table", "diagnose", "diagnose_records",
           "diagnosis_table", "dial_contrasts", "dial_gaps", "dial_left_out", "dial_rows", "dial_run", "dial_table", "dial_differences", "judge_gap", "load_records",
           "mean_sd", "pm", "read_differences", "readout_gaps", "regulariser_groups", "sentence", "summary_row",
           "train_and_evaluate"]
