"""A run directory never loses work: one run at a time (a real second process is refused, a killed one leaves no
stale lock), and a save that fails (a full disk) removes its partial file, keeps the previous checkpoint, and says
how to go on."""
from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_train import REPO, TINY_ARGS, run_cli, tiny

from minijepa.checkpoint import CheckpointError, RunDirectoryBusy, RunLock, load_checkpoint
from minijepa.train import load_run, train

HOLD = "import sys, time; from minijepa.checkpoint import RunLock\nwith RunLock(sys.argv[1]):\n" \
       "    print('locked', flush=True); time.sleep(600)"


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """A second process that holds the run directory's lock until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_cannot_train_into_a_busy_directory(tmp_path):
    run = tmp_path / "run"
    train(tiny(steps=2), run, progress=False)
    holder = hold_lock(run)
    try:
        cli = run_cli("--out", str(run), "--resume", "--no-progress")
        _, err = cli.communicate(timeout=300)
        assert cli.returncode == 1
        assert err.strip().splitlines() == [f"error: {run} is in use by process {holder.pid}: one run per directory. "
                                            "Wait for it to finish (or stop it), or train into another --out"]
        cfg, model, ckpt = load_run(run)  # reading a run (evaluation) is never blocked
        assert ckpt["step"] == 2
    finally:
        holder.send_signal(signal.SIGKILL)  # killed, not stopped: the OS drops the lock with the process
        holder.wait()
    with RunLock(run):  # no stale lock
        pass
    train(tiny(steps=2), run, resume=True, progress=False)  # and training into it works again


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    """A notebook cell and a second training call in the same kernel are two runs as well."""
    with RunLock(tmp_path):
        with pytest.raises(RunDirectoryBusy, match=f"{tmp_path} is in use by process {os.getpid()}"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):
        pass
    assert not (tmp_path / ".lock").exists()  # a run that ends cleanly leaves nothing behind


def test_a_full_disk_keeps_the_last_checkpoint_and_says_how_to_go_on(tmp_path, monkeypatch):
    """The second save fails halfway (as torch reports a full disk): the partial file is removed, the step-2
    checkpoint stays, the message says how much the checkpoint needs and where --resume goes on; it does."""
    real_open, saves = open, []

    def fill_disk_on_second_save(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        if str(file).endswith(".tmp"):
            saves.append(file)
            if len(saves) == 2:
                f.write(b"half a checkpoint")
                f.close()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return f

    monkeypatch.setattr("builtins.open", fill_disk_on_second_save)
    monkeypatch.setattr("shutil.disk_usage", lambda p: SimpleNamespace(free=1024))  # 1 KB left
    with pytest.raises(CheckpointError) as e:
        train(tiny(steps=6, ckpt_every=2), tmp_path, progress=False)
    message = str(e.value)
    assert "\n" not in message
    assert "the disk is full" in message and "the checkpoint needs" in message and "0.0 MB are free" in message
    assert "the previous checkpoint is intact. The run stopped at step 4: free some space, then --resume continues " \
           "from step 2" in message
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint.pt"]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    train(tiny(steps=6, ckpt_every=2), tmp_path, resume=True, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 6


def test_a_failed_save_is_one_error_line_on_the_command_line(tmp_path):
    """A real failing write: the training process may not write files over 64 KB (RLIMIT_FSIZE, the OS's own
    error), so its first checkpoint cannot be saved. One `error:` line, no traceback, no partial file."""
    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process

    cli = run_cli("--out", str(tmp_path), *TINY_ARGS, "--steps", "2", "--no-progress", preexec_fn=small_files)
    _, err = cli.communicate(timeout=300)
    assert cli.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: could not save {tmp_path / 'checkpoint.pt'}: ")
    assert "File too large" in lines[0] and "there was no checkpoint before" in lines[0]
    assert lines[0].endswith("The run stopped at step 2: once a checkpoint can be saved there, start again")
    assert not (tmp_path / "checkpoint.pt.tmp").exists() and not (tmp_path / "checkpoint.pt").exists()
