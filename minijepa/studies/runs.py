"""Running and recording the runs of a study: which runs this process may train (`Plan`), one run as a plain train +
evaluate command (`train_and_evaluate`), its record (`record_path`, `load_records`), and the command-line options
every study shares (`add_run_arguments`).

Every subprocess goes through `run`: tests replace `runs.run` to see what would be started."""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

from ..evaluate import eval_path
from ..plots import read_metrics
from .tables import whitened


class Plan:
    """Which runs this process may train: `table_only` trains none, `only` names a set of run slugs, `shard` (i, n)
    takes every n-th run of the study, starting at the i-th. `listing` collects the runs instead of training."""

    def __init__(self, table_only: bool = False, only: set[str] | None = None, shard: tuple[int, int] = (0, 1),
                 listing: list[str] | None = None):
        self.table_only, self.only, self.shard, self.listing = table_only, only, shard, listing
        self.count = 0

    def may_train(self, name: str) -> bool:
        """May the study's next run, `name`, train? (Call once per run, in the study's order.)"""
        i, self.count = self.count, self.count + 1
        if self.listing is not None:
            self.listing.append(name)
            return False
        return not self.table_only and (self.only is None or name in self.only) and i % self.shard[1] == self.shard[0]

    def check_only(self, names: list[str], what: str) -> None:
        """Refuse, before anything trains, an `only` that names runs the study does not have."""
        if self.only is not None and self.only - set(names):
            raise ValueError(f"unknown {what}(s) {sorted(self.only - set(names))}; choose from {names}")


def run(cmd: list[str]) -> None:
    """Run one command, printed first; a failed one stops the study (rerun it to continue)."""
    print("$ " + " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:  # the command has printed why; the study stops here, resumable
        raise SystemExit(f"error: the study stopped at this failed command (fix it, then rerun the study to "
                         f"continue): {' '.join(cmd)}")


def train_and_evaluate(out: Path, preset: str, overrides: dict[str, str], baseline: bool,
                       table_only: bool = False, layers: int = 1, record: Path | None = None) -> dict | None:
    """Train (unless finished) and evaluate (unless done) one run; return its summary row. `layers` picks the
    read-out (the last block, or the last 4). A summary already in `record` (a JSON file) is returned as it is, unless
    it was read out with the earlier, whitened probes: then the run is evaluated again (and trained again first if
    its checkpoint is gone); a new summary is written there. With `table_only`, nothing runs: an unfinished run gives
    None, an old record is returned as it is."""
    if record is not None and record.exists():
        summary = json.loads(record.read_text())
        if table_only or not whitened(summary["result"]):
            return summary
        # read out with the earlier, whitened probes: evaluate the run again (trained again if it is gone)
    result_path = eval_path(out, layers)
    if table_only and not result_path.exists():
        return None
    if not table_only and (not result_path.exists() or whitened(json.loads(result_path.read_text()))):
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
    if record is not None:
        write_record(record, summary)
    return summary


def write_record(path: Path, summary: dict) -> None:
    """Write a run's record atomically: a killed study never leaves half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    tmp.replace(path)


def record_path(record: Path | None, run_slug: str) -> Path | None:
    """A run's record in a study's record folder (None: the study keeps no records)."""
    return None if record is None else record / f"{run_slug}.json"


def load_records(folder: str | Path) -> list[dict]:
    """Every run record of a study (RECORD/<study>/*.json), e.g. docs/studies/distractors."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


def slug(name: str) -> str:
    """A row label as a run name: "lr 3e-4" -> "lr-3e-4"."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


# ------------------------------------------------------------------------------------------- the shared options
def seed_list(text: str) -> list[int]:
    """--seeds: "0,1" -> [0, 1]."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write comma-separated integers, e.g. 0,1") from None


def shard_spec(text: str) -> tuple[int, int]:
    """--shard: "1/2" -> (1, 2)."""
    try:
        i, n = (int(v) for v in text.split("/"))
        if 0 <= i < n:
            return i, n
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r}: write I/N with 0 <= I < N, e.g. 0/2")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options of every study: where its runs and records go, and which runs this process trains."""
    p.add_argument("--out", type=Path, default=Path("runs/study"),
                   help="where the run directories go (default runs/study)")
    p.add_argument("--record", type=lambda v: None if v == "none" else Path(v), default=Path("docs/studies"),
                   help="where records, tables and figures go (default docs/studies, committed; none: keep nothing)")
    p.add_argument("--table-only", action="store_true", help="train nothing, tabulate the finished runs")
    p.add_argument("--only", type=lambda v: set(v.split(",")), help="comma-separated run names to train (see --list)")
    p.add_argument("--shard", type=shard_spec, default=(0, 1),
                   help="I/N: train only every N-th run, starting at the I-th (0/2 and 1/2 can run side by side)")
    p.add_argument("--list", action="store_true", help="print the study's runs and train nothing")


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The Plan that --table-only, --only, --shard and --list describe."""
    return Plan(args.table_only, args.only, args.shard, listing=[] if args.list else None)


def folders(args: argparse.Namespace, name: str) -> tuple[Path, Path | None]:
    """A study's run directories (OUT/name) and its records (RECORD/name, None with `--record none`)."""
    return args.out / name, None if args.record is None else args.record / name


def write_table(args: argparse.Namespace, name: str, table: str) -> Path:
    """Print a study's table and write it to RECORD/<name>.md (OUT/<name>.md with `--record none`); returns the
    folder, where figures go too."""
    where = args.out if args.record is None else args.record
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{name}.md").write_text(table + "\n")
    print(table)
    return where
