"""Bad input on every command line ends in one line `error: <message>` and a non-zero exit status, no traceback.

The whole table runs in-process through each CLI's `main(argv)`: any exception other than SystemExit fails the test,
as it would print a traceback. A subset runs as real commands, side by side, to check what a user sees."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import tiny

from minijepa import bench, evaluate, gpucheck, pretrained
from minijepa import train as train_module
from minijepa.studies.__main__ import main as studies_main
from minijepa.train import TrainingDiverged, train, user_errors

REPO = Path(__file__).resolve().parent.parent
CLIS = {"train": train_module.main, "evaluate": evaluate.main, "bench": bench.main, "pretrained": pretrained.main,
        "gpucheck": gpucheck.main, "studies": studies_main}
BAD = [  # (command, arguments; {tmp} is a fresh folder, {run} a finished tiny run), what the message must say
    ("train", "--out {tmp}/r --steps -5", "--steps must be a positive whole number, got -5"),
    ("train", "--out {tmp}/r --batch-size 0", "--batch-size must be a positive"),
    ("train", "--out {tmp}/r --lr 0 --momentum 2", "--lr must be > 0, got 0.0; --momentum must be in [0, 1]"),
    ("train", "--out {tmp}/r --steps many", "--steps: cannot read 'many' as int"),
    ("train", "--out {tmp}/r --patch-size 5", "not divisible by patch size 5"),
    ("train", "--out {tmp}/r --target-scale 0.9,0.95", "impossible masks"),
    ("train", "--out {tmp}/r --target-scale 0.1", "write two numbers like 0.15,0.2"),
    ("train", "--out {tmp}/r --target nonsense", "--target must be one of latent, pixels, got 'nonsense'"),
    ("train", "--out {tmp}/r --masking zigzag", "--masking must be one of multiblock, random, block, rasterized"),
    ("train", "--out {tmp}/r --dim 102", "--dim must be divisible by 4 (sin-cos positions) and by --heads (4)"),
    ("train", "--out {tmp}/r --amp fast", "--amp must be one of auto, bf16, fp16, off"),
    ("train", "--out {tmp}/r --device gpu", "--device 'gpu': use auto, cpu, cuda"),
    ("train", "--out {tmp}/r --distractor noise", "distractor 'noise': write KIND:STRENGTH"),
    ("train", "--out {tmp}/r --data imagefolder:{tmp}/missing", "no images for split 'train'"),
    ("train", "--out {tmp}/r --data mnist", "unknown dataset 'mnist'"),
    ("train", "--out {tmp}/r --preset huge", "argument --preset: invalid choice: 'huge'"),
    ("train", "--out {tmp}/r --resume", "no checkpoint at"),
    ("train", "--steps 5", "the following arguments are required: --out"),
    ("evaluate", "{tmp}/nothing", "no checkpoint at"),
    ("evaluate", "", "give a run directory or --raw-pixels DATA"),
    ("evaluate", "{run} --batch-size 0", "--batch-size and --k must be >= 1"),
    ("evaluate", "{run} --layers 3", "argument --layers: invalid choice: 3"),
    ("evaluate", "--raw-pixels mnist", "unknown dataset 'mnist'"),
    ("bench", "--steps 0", "--steps must be >= 1"),
    ("bench", "--batch-size 0", "--batch-size must be a positive"),
    ("bench", "--amp half", "argument --amp: invalid choice: 'half'"),
    ("pretrained", "make nothing", "invalid choice: 'nothing'"),
    ("pretrained", "export {tmp}/nothing tiny", "no checkpoint at"),
    ("gpucheck", "--only bench,nothing", "--only: unknown step(s) nothing"),
    ("gpucheck", "--dry-run --out {run}", "is not empty"),
    ("studies", "distractors --kinds noise,blur --out {tmp}", "unknown distractor kind(s) ['blur']"),
    ("studies", "compare --preset huge --out {tmp}", "argument --preset: invalid choice: 'huge'"),
    ("studies", "compare --seeds 0,x --out {tmp}", "--seeds: '0,x': write comma-separated integers"),
    ("studies", "distractors --shard 2/2 --out {tmp}", "--shard: '2/2': write I/N"),
    ("studies", "ablations --only lr-9 --out {tmp}", "unknown ablation(s) ['lr-9']"),
    ("studies", "compare --steps 0 --out {tmp}", "--steps: must be a whole number, at least 1"),
]
if not torch.cuda.is_available():
    BAD += [("train", "--out {tmp}/r --device cuda", "device 'cuda': no CUDA GPU"),
            ("bench", "--device cuda", "device 'cuda': no CUDA GPU"),
            ("evaluate", "{run} --device cuda", "device 'cuda': no CUDA GPU")]
OFFLINE = dict(MINIJEPA_DATA="{tmp}/data", https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
               no_proxy="")  # a download fails at once, on- or offline
COMMANDS = [("train", "--out {tmp}/r --steps -5", "--steps must be a positive"),
            ("train", "--out {tmp}/r --data cifar10", "CIFAR-10 is not in"),  # chained to a socket error
            ("train", "--out {tmp}/r --preset huge", "invalid choice"),
            ("evaluate", "{tmp}/nothing", "no checkpoint at"),
            ("gpucheck", "--only nothing", "unknown step(s) nothing")]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    train(tiny(steps=2), run, progress=False)
    return run


def error_line(text: str, expected: str) -> bool:
    return any(line.startswith("error:") and expected in line for line in text.splitlines())


@pytest.mark.parametrize("cli, args, expected", BAD, ids=[f"{c} {a}" for c, a, _ in BAD])
def test_bad_command_line_is_one_error_line(cli, args, expected, tmp_path, finished_run, capsys, monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("this command line was accepted: it started training")

    monkeypatch.setattr(train_module, "train_step", started)
    argv = args.format(tmp=tmp_path, run=finished_run).split()
    with pytest.raises(SystemExit) as stop:
        CLIS[cli](argv)
    code, err = stop.value.code, capsys.readouterr().err
    message = code if isinstance(code, str) else err  # SystemExit("error: ...") prints its message and exits 1
    assert code not in (0, None) and error_line(message, expected), (code, err)


def test_out_of_gpu_memory_is_one_line_with_advice():
    with pytest.raises(SystemExit, match=r"error: out of memory \(CUDA out of memory. Tried to allocate 2.00 GiB\); "
                                         r"lower --batch-size"):
        with user_errors():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\n(details)")
    with pytest.raises(SystemExit, match="error: loss became non-finite"):
        with user_errors():
            raise TrainingDiverged("loss became non-finite at step 3")


def test_bf16_on_a_card_without_it_is_refused_before_anything_runs(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    for cli, argv in ((bench.main, ["--device", "cuda", "--amp", "bf16"]),
                      (train_module.main, ["--out", str(tmp_path / "r"), "--device", "cuda", "--amp", "bf16"])):
        with pytest.raises(SystemExit, match="error: --amp bf16: Tesla T4 has no native bf16.*use --amp fp16"):
            cli(argv)
    assert not (tmp_path / "r").exists()


def test_bad_commands_as_a_user_sees_them(tmp_path):
    """Real processes: exit status, the error line on stderr, and no traceback (the package's errors are chained
    to deeper ones, e.g. a dataset that cannot be downloaded to a socket error)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           **{k: v.format(tmp=tmp_path) for k, v in OFFLINE.items()}}
    procs = [subprocess.Popen([sys.executable, "-m", f"minijepa.{cli}", *args.format(tmp=tmp_path).split()], env=env,
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cli, args, _ in COMMANDS]  # side by side: most of each one's time is importing torch
    for (cli, args, expected), proc in zip(COMMANDS, procs):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode not in (0, None) and error_line(err, expected), (cli, args, proc.returncode, err)
        assert "Traceback" not in err, (cli, args, err)


def test_train_help_names_each_option_once_with_its_choices_and_meaning(capsys):
    """--help comes from config.OPTIONS: every Config field once (no second spelling), its choices where the values
    are a fixed set, and a line of meaning; OPTIONS and Config cannot drift apart."""
    import dataclasses

    from minijepa.config import OPTIONS, Config
    assert list(OPTIONS) == [f.name for f in dataclasses.fields(Config)]
    with pytest.raises(SystemExit):
        train_module.main(["--help"])
    text = capsys.readouterr().out
    listed = [line.split()[0] for line in text.split("options:")[1].splitlines() if line.startswith("  -")]
    for name, (meaning, choices) in OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        assert listed.count(flag) == 1, flag  # listed once, in the options
        assert "--" + name not in listed or "_" not in name  # the config.json spelling is accepted, not listed
        if choices:
            assert f"{flag} {{{','.join(choices)}}}" in text
    assert "--reg {none,vicreg,sigreg}" in text and "--amp {auto,bf16,fp16,off}" in text
    assert "anti-collapse term" in " ".join(text.split())
