"""A run directory that never loses work: atomic checkpoints, safe loading, and one run at a time.

    save_checkpoint  write to NAME.tmp, then rename over NAME: a crash or a full disk mid-save leaves the previous
                     checkpoint intact; a failed save removes its partial file and says what failed and what it needs
    load_checkpoint  torch.load(weights_only=True): a checkpoint can never run pickled code; corrupt or foreign
                     files are a clear CheckpointError
    RunLock          an exclusive OS lock on the run directory (flock on RUN/.lock, removed at the end): a second
                     process training into the same --out stops with an error naming the process that holds it. The
                     OS drops the lock when the process ends, however it ends, so a killed run never leaves a stale
                     lock behind.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import shutil
from pathlib import Path

import torch

CHECKPOINT_FORMAT = "minijepa-checkpoint-v1"


class CheckpointError(RuntimeError):
    pass


class RunDirectoryBusy(RuntimeError):
    pass


class DiskFullError(CheckpointError):
    pass


def save_checkpoint(path: Path, **state) -> None:
    """Atomic write: the checkpoint is serialised in memory, written to NAME.tmp and flushed to the disk, then
    renamed over NAME, so a crash or a full disk mid-save leaves the previous checkpoint intact. If the write fails,
    the partial NAME.tmp is deleted (it would hold the space) and a CheckpointError (DiskFullError when the disk is
    full) says what failed, where, and how much room the checkpoint needs."""
    path, buffer = Path(path), io.BytesIO()
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        need, free = buffer.getbuffer().nbytes / 2**20, shutil.disk_usage(path.parent).free / 2**20
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        kept = "the previous checkpoint is intact" if path.exists() else "there was no checkpoint before"
        raise (DiskFullError if full else CheckpointError)(
            f"could not save {path}: {'the disk is full' if full else e.strerror or e} (the checkpoint needs "
            f"{need:.1f} MB, {free:.1f} MB are free there); the partial file was removed and {kept}") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train first (python -m minijepa.train --out {path.parent})")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)  # never runs pickled code
    except Exception as e:
        raise CheckpointError(f"{path} is corrupt or not a PyTorch file ({type(e).__name__}: {e}); delete it and "
                              f"train again, or resume from a backup") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a minijepa checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return ckpt


class RunLock:
    """`with RunLock(out):` holds an exclusive lock on the run directory `out` (created if missing) for the block.
    RUN/.lock keeps the holder's process id, so that a second process can say who holds it; the holder removes the
    file as it lets go (a killed process leaves it behind, unlocked, and the next run simply takes it)."""

    def __init__(self, out: str | Path):
        self.path = Path(out) / ".lock"
        self.file = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            file = open(self.path, "a+")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                holder = file.read().strip() or "another process"
                file.close()
                raise RunDirectoryBusy(f"{self.path.parent} is in use by {holder}: one run per directory. Wait for it "
                                       f"to finish (or stop it), or train into another --out") from None
            try:  # the lock is ours if the file is still the one at RUN/.lock (a holder may have just removed it)
                if os.stat(self.path).st_ino == os.fstat(file.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            file.close()
        file.seek(0)
        file.truncate()
        file.write(f"process {os.getpid()}\n")
        file.flush()
        self.file = file
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)  # before letting go, so that no one locks a file that is about to vanish
        self.file.close()  # closing the file releases the lock
