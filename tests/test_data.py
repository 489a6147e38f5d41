"""Loaders read files in their real on-disk formats (written here by the tests), and fail helpfully."""
from __future__ import annotations

import gzip
import pickle
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

import minijepa.data as data
from minijepa.data import DatasetNotFoundError, center_resize, load_dataset, load_photos, random_resized_crop

rng = np.random.default_rng(0)


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_embedded_subset_loads_offline_balanced():
    train, test = load_dataset("embedded", "train"), load_dataset("embedded", "test")
    assert train.images.shape == (6000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.long
    assert train.labels.bincount().tolist() == [600] * 10 and test.labels.bincount().tolist() == [100] * 10
    assert len(train.classes) == 10 and train.images.float().std() > 50  # real images, not blank


def test_fashion_mnist_idx_roundtrip(tmp_path):
    """The four original .gz idx files in a folder: pixels, orientation and labels come back exactly."""
    x = {s: rng.integers(0, 256, (n, 28, 28)) for s, n in (("train", 5), ("test", 3))}
    y = {s: rng.integers(0, 10, len(x[s])) for s in x}
    for s, (fx, fy) in data.FASHION_FILES.items():
        write_idx(tmp_path / fx, x[s])
        write_idx(tmp_path / fy, y[s])
    for s in ("train", "test"):
        d = load_dataset("fashion-mnist", s, root=tmp_path, download=False)
        assert torch.equal(d.images[:, 0], torch.from_numpy(x[s]).to(torch.uint8))
        assert torch.equal(d.labels, torch.from_numpy(y[s]))


def test_cifar_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    pixels = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pixels[name] = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": pixels[name], b"labels": [1, 2, 3, 4]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    train = load_dataset("cifar10", "train", root=tmp_path, download=False)
    assert train.images.shape == (20, 3, 32, 32) and train.classes[3] == "c3"
    # row layout: 1024 red values, then green, then blue, each row-major
    assert train.images[0, 1, 0, 5] == pixels["data_batch_1"][0, 1024 + 5]
    assert load_dataset("cifar10", "test", root=tmp_path, download=False).labels.tolist() == [1, 2, 3, 4]

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"fine_labels": [7, 99],
                         b"coarse_labels": [0, 1]}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, f)
    c100 = load_dataset("cifar100", "test", root=tmp_path, download=False)
    assert c100.labels.tolist() == [7, 99] and len(c100.classes) == 100


def test_stl10_binaries_are_upright(tmp_path):
    """STL-10 stores each channel column-major; an image whose top row is bright must load with a bright top row."""
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    img = np.zeros((3, 96, 96), np.uint8)
    img[:, 0, :] = 255  # top row (H index 0)
    np.stack([img.transpose(0, 2, 1)] * 2).tofile(folder / "train_X.bin")  # column-major on disk
    np.array([1, 10], np.uint8).tofile(folder / "train_y.bin")
    (folder / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)))
    np.stack([img.transpose(0, 2, 1)]).tofile(folder / "unlabeled_X.bin")
    d = load_dataset("stl10", "train", root=tmp_path, download=False)
    assert d.images.shape == (2, 3, 96, 96) and (d.images[:, :, 0] == 255).all() and (d.images[:, :, 1:] == 0).all()
    assert d.labels.tolist() == [0, 9]  # 1-based on disk
    assert load_dataset("stl10", "unlabeled", root=tmp_path, download=False).labels.tolist() == [-1]


def test_image_folder_and_cache(tmp_path):
    for split in ("train", "val"):
        for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (tmp_path / "ds" / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 30), colour).save(tmp_path / "ds" / split / cls / f"{i}.png")
    d = load_dataset(f"imagefolder:{tmp_path / 'ds'}", "test", root=tmp_path / "cache", img_size=16)
    assert d.images.shape == (4, 3, 16, 16) and d.classes == ["cat", "dog"] and d.labels.tolist() == [0, 0, 1, 1]
    assert d.images[0, 0].float().mean() > 250 and d.images[3, 2].float().mean() > 250  # red cats, blue dogs
    assert len(list((tmp_path / "cache" / "imagefolder-cache").glob("*.pt"))) == 1
    again = load_dataset(f"imagefolder:{tmp_path / 'ds'}", "test", root=tmp_path / "cache", img_size=16)
    assert torch.equal(again.images, d.images)
    with pytest.raises(DatasetNotFoundError, match="imagenette"):
        load_dataset(f"imagefolder:{tmp_path / 'nothing'}", root=tmp_path)


def test_missing_datasets_say_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", root=tmp_path, download=False)
    with pytest.raises(DatasetNotFoundError, match="stl10_binary.tar.gz"):
        load_dataset("stl10", "unlabeled", root=tmp_path, download=False)
    monkeypatch.setattr(data, "DEBIAN_FASHION", tmp_path / "no-debian-package")
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path, download=False)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError, match="downloading .* failed .*no network"):
        load_dataset("cifar100", root=tmp_path, download=True)


def test_bad_names_and_splits():
    with pytest.raises(ValueError, match="imagefolder:PATH"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="splits"):
        load_dataset("embedded", "unlabeled")


def test_random_resized_crop():
    images = load_dataset("embedded", "test").images[:16]
    a = random_resized_crop(images, 28, generator=torch.Generator().manual_seed(0))
    b = random_resized_crop(images, 28, generator=torch.Generator().manual_seed(0))
    c = random_resized_crop(images, 28, generator=torch.Generator().manual_seed(1))
    assert a.shape == (16, 1, 28, 28) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    whole = random_resized_crop(images, 28, scale=(1, 1), ratio=(1, 1), generator=torch.Generator())
    assert torch.allclose(whole, images.float() / 255, atol=1e-5)  # the full image, unchanged
    flat = torch.full((4, 3, 32, 32), 77, dtype=torch.uint8)
    assert torch.allclose(random_resized_crop(flat, 16), torch.full((4, 3, 16, 16), 77 / 255))
    assert center_resize(images, 14).shape == (16, 1, 14, 14)


def test_mean_std_and_photos():
    d = load_dataset("embedded", "test")
    mean, std = d.mean_std()
    x = d.images.float() / 255
    assert torch.allclose(mean, x.mean(dim=(0, 2, 3)), atol=1e-4) and torch.allclose(std, x.std(dim=(0, 2, 3)),
                                                                                     atol=1e-4)
    photos = load_photos(64)
    assert len(photos) == 5 and all(p.shape == (3, 64, 64) and p.dtype == torch.uint8 for _, p in photos)
