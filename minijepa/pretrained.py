"""Small pretrained models, committed in `data/pretrained/`, for the notebooks: load the checkpoint if present, else train.

    python -m minijepa.pretrained make NAME              # train NAME's recipe (below) into runs/pretrained/NAME, export
    python -m minijepa.pretrained export RUN_DIR NAME    # RUN_DIR/checkpoint.pt -> data/pretrained/NAME.pt
    cfg, model, info = load_pretrained(NAME)             # in Python; trains the recipe first if the file is missing

An exported file keeps what the notebooks need and nothing else, in float16 (a few MB): the config, the target
encoder, the predictor, the input normalisation and the run's metrics rows. The optimizer state and the context
encoder stay behind (at the end of training the EMA momentum reaches 1, so the target encoder is the one to keep;
`load_pretrained` puts its weights in both encoders). It is written and read like a training checkpoint: atomically,
and with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .data import EMBEDDED
from .ijepa import IJEPA
from .plots import read_metrics
from .train import (ArgumentParser, CheckpointError, Config, TrainingInterrupted, build_model, config_from_dict,
                    load_checkpoint, load_run, preset_config, save_checkpoint, train, user_errors)

PRETRAINED = EMBEDDED / "pretrained"
RECIPES: dict[str, dict] = {  # name -> preset and overrides: `python -m minijepa.train --preset P --key value ...`
    "fashion-cpu-latent": dict(preset="fashion-cpu", target="latent", seed=0),
    "fashion-cpu-pixels": dict(preset="fashion-cpu", target="pixels", seed=0),
    "fashion-cpu-vicreg": dict(preset="fashion-cpu", target="latent", reg="vicreg", reg_weight=1.0, seed=0),
}
KEPT = ("target_encoder", "predictor")  # the modules an exported file holds


def export(run_dir: str | Path, name: str, root: str | Path = PRETRAINED) -> Path:
    """Write run_dir's trained target encoder and predictor (float16), config, normalisation and metrics to
    root/NAME.pt; returns the path."""
    run_dir = Path(run_dir)
    cfg, model, ckpt = load_run(run_dir)
    weights = {part: {k: v.half() if v.is_floating_point() else v for k, v in getattr(model, part).state_dict().items()}
               for part in KEPT}
    path = Path(root) / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, config=ckpt["config"], step=ckpt["step"], norm=ckpt["norm"], **weights,
                    metrics=read_metrics(run_dir / "metrics.jsonl"), source=str(run_dir))
    return path


def make(name: str, runs: str | Path = "runs/pretrained", root: str | Path = PRETRAINED,
         progress: bool = True) -> Path:
    """Train NAME's recipe into runs/NAME (resuming a run that was stopped) and export it to root/NAME.pt."""
    if name not in RECIPES:
        raise ValueError(f"no recipe called {name!r}; choose one of {sorted(RECIPES)}")
    recipe = dict(RECIPES[name])
    cfg = preset_config(recipe.pop("preset"), **recipe)
    out = Path(runs) / name
    train(cfg, out, resume=(out / "checkpoint.pt").exists(), progress=progress)
    return export(out, name, root)


def load_pretrained(name: str, root: str | Path = PRETRAINED, train_if_missing: bool = True,
                    runs: str | Path = "runs/pretrained") -> tuple[Config, IJEPA, dict]:
    """(config, IJEPA in eval mode on the CPU, the file's dict: step, norm, metrics, source). A missing file is
    trained from its recipe first (minutes to tens of minutes on a CPU) unless `train_if_missing` is False."""
    path = Path(root) / f"{name}.pt"
    if not path.is_file():
        if not train_if_missing:
            raise CheckpointError(f"no pretrained model at {path}: make it with `python -m minijepa.pretrained make "
                                  f"{name}`")
        print(f"{path} is missing: training recipe {name!r} ({RECIPES.get(name)}) once, then loading it")
        make(name, runs, root)
    info = load_checkpoint(path)
    missing = [part for part in KEPT if part not in info]
    if missing:
        raise CheckpointError(f"{path} is a training checkpoint, not an exported model (it lacks {missing}); export "
                              f"its run with `python -m minijepa.pretrained export RUN_DIR {name}`")
    cfg = config_from_dict(info["config"])
    model = build_model(cfg)
    for part, module in (("target_encoder", model.target_encoder), ("target_encoder", model.context_encoder),
                         ("predictor", model.predictor)):
        module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in info[part].items()})
    return cfg, model.eval(), info


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="train a recipe and export it")
    m.add_argument("name", choices=sorted(RECIPES), help="the recipe (RECIPES in minijepa/pretrained.py)")
    m.add_argument("--runs", default="runs/pretrained", metavar="DIR", help="where its run directory goes (default "
                                                                             "runs/pretrained)")
    e = sub.add_parser("export", help="export a finished run")
    e.add_argument("run_dir", help="a run directory with checkpoint.pt")
    e.add_argument("name", help="the file to write: data/pretrained/NAME.pt")
    args = p.parse_args(argv)
    try:
        with user_errors():
            path = make(args.name, args.runs) if args.command == "make" else export(args.run_dir, args.name)
    except TrainingInterrupted as e:  # Ctrl-C while making: saved; `make` again resumes it
        print(e, file=sys.stderr)
        raise SystemExit(128 + e.signum) from None
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()
