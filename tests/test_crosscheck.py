"""The cross-check against the reference I-JEPA code (minijepa/crosscheck.py).

Without the reference code: the weight mapping works both ways and puts the patch embedding in the Conv2d layout,
the comparison rule catches a small perturbation, and a bad --reference folder ends in one `error:` line. With
MINIJEPA_REFERENCE=DIR (a clone of https://github.com/facebookresearch/ijepa), the whole cross-check runs too."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minijepa import crosscheck
from minijepa.train import build_model, preset_config
from minijepa.vit import patchify

REPO = Path(__file__).resolve().parent.parent
TINY = dict(data="cifar10", img_size=16, patch_size=4, dim=16, depth=2, heads=2, predictor_dim=8, predictor_depth=1)

# The reference's names for a depth-1 encoder and predictor (src/models/vision_transformer.py, commit 52c1ae9),
# without the fixed position tables.
BLOCK = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
         "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
REFERENCE_NAMES = {
    "encoder": ["patch_embed.proj.weight", "patch_embed.proj.bias", *(f"blocks.0.{n}" for n in BLOCK), "norm.weight",
                "norm.bias"],
    "predictor": ["predictor_embed.weight", "predictor_embed.bias", "mask_token",
                  *(f"predictor_blocks.0.{n}" for n in BLOCK), "predictor_norm.weight", "predictor_norm.bias",
                  "predictor_proj.weight", "predictor_proj.bias"],
}


def tiny_model(**overrides):
    return build_model(preset_config("demo", **{**TINY, **overrides}))


@pytest.mark.parametrize("part", ["encoder", "predictor"])
def test_mapping_round_trips(part):
    """minijepa -> reference names and layout -> minijepa gives back every tensor unchanged, one to one."""
    model = tiny_model()
    net = model.context_encoder if part == "encoder" else model.predictor
    state = net.state_dict()
    theirs = crosscheck.convert(state, part, patch_size=4, to_reference=True)
    assert len(theirs) == len(state)
    back = crosscheck.convert(theirs, part, patch_size=4, to_reference=False)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize("part", ["encoder", "predictor"])
def test_mapping_gives_the_reference_names(part):
    """Each of our tensors gets the reference's name, each reference name ours; the reference's fixed position
    tables are left out (they are compared, never copied)."""
    model = tiny_model(depth=1, predictor_depth=1)
    state = (model.context_encoder if part == "encoder" else model.predictor).state_dict()
    assert sorted(crosscheck.convert(state, part, patch_size=4, to_reference=True)) == sorted(REFERENCE_NAMES[part])
    assert sorted(crosscheck.rename(n, part, to_reference=False) for n in REFERENCE_NAMES[part]) == sorted(state)
    assert crosscheck.convert({n: torch.zeros(1) for n in crosscheck.FIXED}, part, 4, to_reference=False) == {}


def test_patch_embedding_layout_is_the_conv2d_one():
    """Our Linear on patchified pixels, mapped to a (D, C, P, P) Conv2d weight, embeds patches exactly as the
    reference's stride-P Conv2d does: the (p1 p2 c) order of patchify is undone correctly."""
    enc = tiny_model().context_encoder  # 3 channels: a wrong channel order would show
    theirs = crosscheck.convert(enc.state_dict(), "encoder", patch_size=4, to_reference=True)
    w, b = theirs["patch_embed.proj.weight"], theirs["patch_embed.proj.bias"]
    assert w.shape == (16, 3, 4, 4)
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    conv = F.conv2d(images, w, b, stride=4).flatten(2).transpose(1, 2)  # (B, N, D), as PatchEmbed.forward
    torch.testing.assert_close(conv, enc.patch_embed(patchify(images, 4)), rtol=1e-5, atol=1e-6)


def test_comparison_fails_on_one_perturbed_weight():
    """Two copies of a model pass; perturbing one weight by 1e-3 fails the weights row, which names the tensor."""
    a = tiny_model()
    b = copy.deepcopy(a)
    assert crosscheck.compare("weights", b.state_dict(), a.state_dict())["result"] == "pass"
    with torch.no_grad():
        b.predictor.blocks[0].mlp[0].weight[0, 0] += 1e-3
    row = crosscheck.compare("weights", b.state_dict(), a.state_dict())
    assert row["result"] == "FAIL" and row["detail"] == "worst: predictor.blocks.0.mlp.0.weight"
    assert row["abs"] == pytest.approx(1e-3, rel=1e-3)


def test_comparison_fails_on_an_index_off_by_one():
    """A wrong patch index (the kind of bug a port makes) fails the output rows by a wide margin."""
    model = tiny_model()
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    context, target = torch.arange(8).repeat(4, 1), torch.arange(10, 14).repeat(4, 1)  # (B, Kc), (B, Kt)
    with torch.no_grad():
        z = model.context_encoder(images, keep=context)
        assert crosscheck.compare("z", model.context_encoder(images, keep=context + 1), z)["rel"] > 0.1
        pred = model.predictor(z, context, target)
        row = crosscheck.compare("predictor", model.predictor(z, context, target + 1), pred)
    assert row["result"] == "FAIL" and row["rel"] > 0.1


def test_rule_is_relative_and_notes_do_not_fail():
    ref = torch.linspace(-1, 1, 11)
    for scale in (1e-6, 1.0, 1e6):
        assert crosscheck.compare("x", scale * (ref + 5e-6), scale * ref)["result"] == "pass"
        assert crosscheck.compare("x", scale * (ref + 5e-5), scale * ref)["result"] == "FAIL"
    assert crosscheck.compare("x", ref + 1, ref, note=2)["result"] == "differs (note 2)"
    assert crosscheck.compare("x", ref[:3], ref)["result"] == "FAIL"  # shapes differ
    assert crosscheck.compare("x", {"a": ref}, {"b": ref})["result"] == "FAIL"  # names differ


def test_adam_bound():
    """Weights may differ by lr/eps times the gradients' difference (note 4), and no more."""
    w, g = {"w": torch.ones(3)}, {"w": torch.zeros(3)}
    moved = {"w": torch.tensor([1.0, 1.0, 1.0 + 1e-4])}
    assert crosscheck.adam_bound("w", moved, w, g, g, lr=1e-4, eps=1e-8)["result"] == "FAIL"
    noisy = {"w": torch.tensor([0.0, 0.0, 1e-8])}  # gradients that differ by 1e-8 allow lr/eps * 1e-8 = 1e-4
    assert crosscheck.adam_bound("w", moved, w, noisy, g, lr=1e-4, eps=1e-8)["result"] == "pass"


def fake_checkout(root: Path, broken: str) -> Path:
    """A folder that looks like the reference but whose API moved."""
    files = {"src/models/vision_transformer.py": "class VisionTransformer:\n    def __init__(self, img_size): pass\n"
                                                 "class VisionTransformerPredictor:\n    pass\n",
             "src/masks/utils.py": "def apply_masks(x, masks): pass\n",
             "src/utils/tensors.py": "def repeat_interleave_batch(x, B, repeat): pass\n",
             "src/utils/distributed.py": "AllReduce = None\n",
             "src/helper.py": "def init_opt(encoder): pass\n"}
    if broken == "missing name":
        files["src/masks/utils.py"] = "def apply_mask(x, masks): pass\n"
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


@pytest.mark.parametrize("case, expected", [
    ("missing", "no such folder; clone https://github.com/facebookresearch/ijepa and pass its folder"),
    ("empty", "is not a checkout of facebookresearch/ijepa (it has no src/models/vision_transformer.py)"),
    ("missing name", "cannot import the reference code"),
    ("signature", "the reference's VisionTransformer in"),
])
def test_bad_reference_folder_is_one_error_line(tmp_path, case, expected):
    folder = tmp_path / "ijepa"
    if case == "empty":
        folder.mkdir()
    elif case != "missing":
        fake_checkout(folder, case)
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "minijepa.crosscheck", "--reference", str(folder), "--json",
                           str(out)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


REFERENCE = os.environ.get("MINIJEPA_REFERENCE")


@pytest.mark.skipif(not REFERENCE, reason="needs the reference code: git clone "
                    "https://github.com/facebookresearch/ijepa, then set MINIJEPA_REFERENCE=<its folder>")
def test_full_crosscheck_against_the_reference(tmp_path):
    """Both configurations, both losses: every comparison passes, and the report says so."""
    out, md = tmp_path / "crosscheck.json", tmp_path / "crosscheck.md"
    proc = subprocess.run([sys.executable, "-m", "minijepa.crosscheck", "--reference", REFERENCE, "--json", str(out),
                           "--markdown", str(md)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    report = json.loads(out.read_text())
    assert report["passed"] and report["rule"] == crosscheck.RULE
    sections = {(s["config"], s["loss"]) for s in report["sections"]}
    assert sections == {(c, loss) for c in crosscheck.CONFIGS for loss in (None, "smooth_l1", "l2")}
    results = {r["result"] for s in report["sections"] for r in s["rows"]}
    assert results == {"pass", "differs (note 1)", "differs (note 2)", "differs (note 3)", "differs (note 4)"}
    assert "| quantity |" in md.read_text()
