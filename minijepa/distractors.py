"""A distractor dial: unpredictable pixel detail added to every image, to see where latent targets win.

I-JEPA's case for predicting representations instead of pixels (paper §1) is that pixels carry detail that cannot
be predicted from the context; a pixel target must spend capacity on it, a latent target can learn to drop it
(Littwin et al. 2024 make this precise for deep linear models). A 28-px garment on a black background has almost
no such detail, so this module adds it, under control, with one strength knob per kind:

    noise:S    i.i.d. Gaussian pixel noise, std S on the [0, 1] pixel scale, fresh for every image and step
    clutter:S  the garment composited over a random crop of one of the photos in data/photos/, stretched to
               the range [0, S]: a class-independent, textured background whose contrast is S

`Distractor.parse("noise:0.3")` reads the spec of `--distractor`; calling the distractor on a batch of [0, 1]
images with a generator draws everything from that generator, so training replays it exactly on `--resume`.
`corrupt_images` does the same for a whole evaluation split with a fixed seed, the same for every run.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from .data import load_photos, random_resized_crop, to_unit

KINDS = ("noise", "clutter")
MAX_STRENGTH = 1.0  # noise as large as the whole pixel range, or a background as bright as the brightest garment
CLUTTER_CROP_SCALE = (0.05, 0.3)  # a small piece of a photo: texture, not a scene
OPAQUE_AT = 0.1  # garment pixels at least this bright (in [0, 1]) hide the background completely
EVAL_SEED = 1234  # evaluation corrupts its splits with this seed, whatever the run's seed: rows stay comparable


@dataclass(frozen=True)
class Distractor:
    kind: str
    strength: float

    @staticmethod
    def parse(spec: str) -> Distractor | None:
        """'none' -> None; 'noise:0.3' or 'clutter:0.8' -> a Distractor. Bad specs raise ValueError saying why."""
        if spec in ("", "none"):
            return None
        kind, sep, value = spec.partition(":")
        if kind not in KINDS or not sep:
            raise ValueError(f"distractor {spec!r}: write KIND:STRENGTH with KIND one of {', '.join(KINDS)} "
                             f"(e.g. noise:0.3 or clutter:0.8), or none")
        try:
            strength = float(value)
        except ValueError:
            raise ValueError(f"distractor {spec!r}: the strength {value!r} is not a number") from None
        if not 0 <= strength <= MAX_STRENGTH:  # also catches nan
            raise ValueError(f"distractor {spec!r}: {kind} strength must be in [0, {MAX_STRENGTH}] "
                             f"({'std of the noise' if kind == 'noise' else 'contrast of the background'} "
                             f"on the [0, 1] pixel scale)")
        return Distractor(kind, strength)

    def __str__(self) -> str:
        return f"{self.kind}:{self.strength:g}"

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """images (B, C, H, W) in [0, 1] -> the same batch with the distractor; random numbers from `generator`
        (on the CPU, so a seed gives the same result on every device)."""
        B, C, H, W = images.shape
        if self.kind == "noise":
            noise = torch.randn(B, C, H, W, generator=generator)  # (B, C, H, W)
            return images + self.strength * noise.to(images)
        photos = backgrounds(C).to(images.device)  # (P, C, S, S) in [0, 1]
        pick = torch.randint(len(photos), (B,), generator=generator)
        bg = random_resized_crop(photos[pick.to(images.device)], H, CLUTTER_CROP_SCALE, generator=generator)
        lo, hi = bg.amin((1, 2, 3), keepdim=True), bg.amax((1, 2, 3), keepdim=True)  # stretch each crop to [0, 1]
        bg = self.strength * (bg - lo) / (hi - lo).clamp_min(1e-6)  # (B, C, H, W) in [0, strength]
        alpha = (images.amax(1, keepdim=True) / OPAQUE_AT).clamp(max=1.0)  # (B, 1, H, W): 1 on the garment
        return images + (1 - alpha) * bg  # the background shows where the image is dark; strength 0: unchanged


@lru_cache(maxsize=2)
def backgrounds(channels: int, size: int = 128) -> torch.Tensor:
    """The photos of data/photos/ as a background bank: (P, channels, size, size) float in [0, 1]; grey for 1 channel."""
    photos = torch.stack([to_unit(image) for _, image in load_photos(size)])  # (P, 3, S, S)
    if channels == 1:
        return (photos * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if channels != 3:
        raise ValueError(f"clutter backgrounds exist for 1 or 3 channels, not {channels}")
    return photos


def corrupt_images(images: torch.Tensor, distractor: Distractor, split: str, batch_size: int = 4096) -> torch.Tensor:
    """A whole evaluation split with the distractor: uint8 (N, C, H, W) -> float (N, C, H, W), drawn with a
    generator seeded by EVAL_SEED and the split's name, so every run is read out on the very same images."""
    g = torch.Generator().manual_seed(EVAL_SEED + sum(map(ord, split)))
    return torch.cat([distractor(to_unit(chunk), g) for chunk in images.split(batch_size)])
