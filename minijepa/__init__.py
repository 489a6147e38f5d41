"""minijepa: a small, readable I-JEPA (Assran et al., CVPR 2023) for teaching and single-GPU training."""
from .ijepa import IJEPA, pixel_targets
from .masks import (BlockMasker, Masker, MultiBlockMasker, RandomMasker, RasterizedMasker, make_masker,
                    mask_grid)
from .predictor import Predictor
from .schedules import ema_momentum, learning_rate, param_groups, set_optimizer, weight_decay
from .vit import ViT, patchify, sincos_pos_embed, vit_base, vit_small, vit_tiny

__version__ = "0.1.0"
