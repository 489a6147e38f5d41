"""Where and how a step runs: the device, the precision that fits it, torch.compile, and peak memory.

    pick_device       auto = cuda > mps > cpu; a device this machine lacks is a clear ValueError
    resolve_amp       --amp auto | bf16 | fp16 | off -> the precision of the step on this device (bf16 on cards with
                      native bf16, fp16 with loss scaling on the others, float32 on the CPU and MPS)
    make_scaler       the fp16 loss scaler (torch.amp.GradScaler), None for every other precision
    compile_problem   whether torch.compile works here, found out in seconds before any training starts
    compile_networks  compile the three networks shape-generically (mask lengths change every batch)
    peak_memory_mb    peak memory so far: CUDA allocations, or the process's resident set

train.py, bench.py, evaluate.py and gpucheck.py share them, so all four make the same choice on the same machine.
"""
from __future__ import annotations

import sys

import torch

from .ijepa import IJEPA

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
AMP_MODES = ("auto", *AMP_DTYPES, "off")


def pick_device(name: str = "auto") -> torch.device:
    """auto = cuda > mps > cpu. A device this machine does not have is a ValueError that says what to use instead."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available()
                            else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU or driver is visible"
        raise ValueError(f"device {name!r}: {why}; use --device cpu, or auto (the best device present)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS (Apple GPU) is not available here; use --device cpu or auto")
    return device


def resolve_amp(amp: str, device: torch.device) -> str:
    """The precision of the step on `device`, "bf16" | "fp16" | "off" (float32), from the `amp` option:
        auto  on CUDA, bf16 autocast where the card has native bf16 (compute capability 8.0+: A100, H100, L4,
              RTX 30xx/40xx), else fp16 autocast with loss scaling (T4, V100: the usual Colab cards). Off on the CPU
              (bf16 is emulated, ~100x slower, on most CPUs) and on MPS (float32; its autocast is not tested here).
        bf16  refused on a CUDA card without native bf16 (it would be emulated); on the CPU, bf16 autocast.
        fp16  fp16 autocast + torch.amp.GradScaler (make_scaler), on CUDA or the CPU.
    bf16 and fp16 on MPS are refused: use off."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return "off"
    if device.type == "mps":
        raise ValueError(f"--amp {amp} is not supported on MPS here; use --amp off (what auto picks on MPS)")
    if device.type == "cuda":
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        if amp == "auto":
            return "bf16" if native_bf16 else "fp16"
        if amp == "bf16" and not native_bf16:
            raise ValueError(f"--amp bf16: {torch.cuda.get_device_name(device)} has no native bf16 (compute "
                             f"capability below 8.0); use --amp fp16, or auto (fp16 with loss scaling on this card)")
    return amp


def make_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling (its gradients underflow otherwise); bf16 has float32's range and float32 needs none."""
    return torch.amp.GradScaler(device.type) if amp == "fp16" else None


def compile_problem(device: torch.device) -> str | None:
    """None if torch.compile works on `device`, else why not (no C++ compiler, no Triton, ...), found by compiling
    and running a one-line function: a missing compiler then fails here in seconds, not inside the first step."""
    try:
        torch.compile(lambda t: t * 2 + 1, dynamic=False)(torch.ones(4, device=device))
    except Exception as e:  # torch raises many kinds here (BackendCompilerFailed, RuntimeError, OSError, ...)
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no message'}"
    return None


def compile_networks(model: IJEPA) -> None:
    """torch.compile the context encoder, target encoder and predictor in place, shape-generic (`dynamic=True`):
    context and target lengths change every batch. IJEPA.forward's checks and the few gathers of the loss stay
    eager; compiling the whole IJEPA instead specialises the target length at its `len({...})` check, so each new
    block size recompiled (until dynamo's recompile limit, then ran eagerly). Compiled this way, 20 steps of
    changing lengths compile each network once, plus one recompile for the target encoder's no-grad pass
    (tests/test_compile.py). On CPU tensors the index range check in vit.check_index breaks the graph; on CUDA it
    is skipped: `torch._dynamo.explain` on meta tensors (which skip it too) finds one graph and no graph break in
    each network."""
    for net in (model.context_encoder, model.target_encoder, model.predictor):
        net.compile(dynamic=True)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: allocated tensors on CUDA, the process's resident set (max RSS) elsewhere."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
