"""minijepa.decoder: shapes, exact patch layout, a decoder that learns, clear errors."""
import pytest
import torch
import torch.nn.functional as F

from minijepa.decoder import PatchDecoder, decode, target_features, train_decoder, unpatchify
from minijepa.vit import ViT, patchify


def identity_decoder(patch_size: int, in_chans: int) -> PatchDecoder:
    """A one-layer decoder whose linear map is the identity: features == patchified pixels."""
    n = patch_size * patch_size * in_chans
    dec = PatchDecoder(n, patch_size, in_chans, depth=0)
    with torch.no_grad():
        dec.mlp[0].weight.copy_(torch.eye(n))
        dec.mlp[0].bias.zero_()
    return dec


@pytest.mark.parametrize("size,patch,chans", [((28, 28), 4, 1), ((32, 32), 4, 3), ((12, 20), 4, 2)])
def test_unpatchify_inverts_patchify(size, patch, chans):
    images = torch.rand(3, chans, *size)
    grid = (size[0] // patch, size[1] // patch)
    assert torch.equal(unpatchify(patchify(images, patch), patch, grid), images)


def test_identity_features_reproduce_the_image():
    images = torch.rand(2, 3, 32, 24)  # non-square grid (8 x 6) catches a swapped row/column layout
    out = decode(identity_decoder(4, 3), patchify(images, 4), (8, 6))
    assert out.shape == images.shape
    torch.testing.assert_close(out, images)


def test_decode_unnormalises_and_clips():
    mean, std = torch.tensor([0.3]), torch.tensor([0.2])
    images = torch.rand(2, 1, 8, 8)
    dec = identity_decoder(4, 1)
    dec.mean.copy_(mean)
    dec.std.copy_(std)
    torch.testing.assert_close(decode(dec, patchify((images - mean) / std, 4), 2), images)
    assert decode(dec, torch.full((1, 4, 16), 100.0), 2).max() == 1.0  # clipped to [0, 1]


def test_patch_decoder_shapes():
    dec = PatchDecoder(32, 4, in_chans=3, hidden=16, depth=2)
    assert dec(torch.randn(5, 49, 32)).shape == (5, 49, 48)
    assert decode(dec, torch.randn(5, 49, 32), 7).shape == (5, 3, 28, 28)


def test_wrong_shapes_raise():
    dec = PatchDecoder(32, 4)
    with pytest.raises(ValueError, match=r"\(B, N, 32\)"):
        dec(torch.randn(2, 49, 31))
    with pytest.raises(ValueError, match=r"\(B, N, 32\)"):
        dec(torch.randn(49, 32))
    with pytest.raises(ValueError, match="7x7 grid"):
        decode(dec, torch.randn(2, 48, 32), 7)
    with pytest.raises(ValueError, match="uint8"):
        train_decoder(ViT(8, 4, 1, dim=16, depth=1, heads=2), torch.rand(4, 1, 8, 8), dict(mean=[0.5], std=[0.5]))


def test_target_features_are_layer_normed_encoder_output():
    torch.manual_seed(0)
    enc = ViT(8, 4, 1, dim=16, depth=1, heads=2)
    x = torch.randn(6, 1, 8, 8)
    feats = target_features(enc, x, batch_size=4)
    with torch.no_grad():
        torch.testing.assert_close(feats, F.layer_norm(enc(x), (16,)))


def test_training_lowers_the_loss_and_decodes_training_images():
    torch.manual_seed(0)
    enc = ViT(8, 4, 1, dim=32, depth=1, heads=2)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    norm = dict(mean=torch.tensor([0.5]), std=torch.tensor([0.29]))
    dec, losses = train_decoder(enc, images, norm, steps=300, batch_size=32, lr=3e-3, seed=0, hidden=64)
    assert len(losses) == 300 and not dec.training
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20
    x = (images.float() / 255 - 0.5) / 0.29
    out = decode(dec, target_features(enc, x), 2)  # (64, 1, 8, 8) in [0, 1]
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    err = (out - images.float() / 255).abs().mean()
    assert err < 0.5 * (images.float() / 255 - 0.5).abs().mean()  # far better than predicting the mean
    # same seed, same decoder
    dec2, losses2 = train_decoder(enc, images, norm, steps=300, batch_size=32, lr=3e-3, seed=0, hidden=64)
    assert losses2 == losses
