"""Loaders read files in their real on-disk formats (written here by the tests) and fail helpfully; the batched
RandomResizedCrop crops what it should."""
from __future__ import annotations

import gzip
import os
import pickle
import re
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile

import minijepa.data as data
from minijepa.data import (CorruptDatasetError, DatasetNotFoundError, center_resize, load_dataset, load_photos,
                           normalise, random_resized_crop)

rng = np.random.default_rng(0)


def write_idx(path, array: np.ndarray) -> None:
    """LeCun's idx format, gzipped: 0, 0, dtype 0x08 (uint8), ndim, big-endian sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion(folder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", 5), ("test", 3)):
        x, y = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        x[0, :4, :] = 255  # top rows bright, left columns dark: orientation is visible, not just exact
        x[0, 4:, :4] = 0
        fx, fy = data.FASHION_SPLITS[split]
        write_idx(folder / fx, x)
        write_idx(folder / fy, y)
        arrays[split] = x, y
    return arrays


@pytest.fixture
def no_debian(tmp_path, monkeypatch):
    """Make the test independent of Debian's dataset-fashion-mnist package being installed on this machine."""
    monkeypatch.setattr(data, "DEBIAN_FASHION", tmp_path / "no-debian-package")


@pytest.fixture
def offline(monkeypatch):
    """The network fails the way urllib fails without one (torchvision's download_and_extract_archive calls this)."""
    def fail(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr("torchvision.datasets.utils.download_url", fail)


def test_embedded_subset_loads_offline_balanced():
    train, test = load_dataset("embedded", "train"), load_dataset("embedded", "test")
    assert train.images.shape == (6000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.long and len(train) == 6000
    assert train.labels.bincount().tolist() == [600] * 10 and test.labels.bincount().tolist() == [100] * 10
    assert train.classes[9] == "Ankle boot" and train.name == "embedded"
    assert train.images.float().std() > 50 and not torch.equal(train.images[0], train.images[1])  # real images
    image, label = test[3]
    assert image.shape == (1, 28, 28) and label.dtype == torch.long


@pytest.mark.parametrize("layout", ["", "fashion-mnist", "FashionMNIST/raw"])
def test_fashion_mnist_idx_roundtrip(tmp_path, no_debian, layout):
    """The four original .gz idx files (in root, root/fashion-mnist or torchvision's layout) load exactly."""
    arrays = write_fashion(tmp_path / layout)
    for split, (x, y) in arrays.items():
        d = load_dataset("fashion-mnist", split, root=tmp_path, download=False)
        assert d.images.shape == (len(x), 1, 28, 28) and d.images.dtype == torch.uint8
        assert torch.equal(d.images[:, 0], torch.from_numpy(x).to(torch.uint8))
        assert torch.equal(d.labels, torch.from_numpy(y).long()) and d.name == "fashion-mnist"
        if split == "train":
            assert (d.images[0, 0, :4] == 255).all() and (d.images[0, 0, 4:, :4] == 0).all()


@pytest.mark.skipif(not data.DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package(tmp_path):
    d = load_dataset("fashion-mnist", "test", root=tmp_path, download=False)
    assert d.images.shape == (10_000, 1, 28, 28) and d.labels.bincount().tolist() == [1000] * 10


def write_cifar10(folder) -> dict[str, np.ndarray]:
    """CIFAR-10's python pickles, 4 images per batch: {batch file: its pixels (4, 3072)}."""
    folder.mkdir(parents=True)
    pixels = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pixels[name] = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": b"x", b"data": pixels[name], b"labels": [1, 2, 3, 4],
                         b"filenames": [b"a.png"] * 4}, f, protocol=2)  # the real files: python 2, protocol 2
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072}, f)
    return pixels


def test_cifar_pickles(tmp_path):
    pixels = write_cifar10(tmp_path / "cifar-10-batches-py")
    train = load_dataset("cifar10", "train", root=tmp_path, download=False)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8 and train.classes[3] == "c3"
    # a row is 1024 red values, then 1024 green, then 1024 blue, each 32x32 row-major
    expected = torch.from_numpy(np.concatenate([pixels[f"data_batch_{i}"] for i in range(1, 6)])).view(20, 3, 32, 32)
    assert torch.equal(train.images, expected) and train.images[0, 1, 2, 5] == pixels["data_batch_1"][0, 1024 + 69]
    assert load_dataset("cifar10", "test", root=tmp_path / "cifar-10-batches-py", download=False).labels.tolist() \
        == [1, 2, 3, 4]  # root may also be the folder itself

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"fine_labels": [7, 99],
                         b"coarse_labels": [0, 1]}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"g{i}".encode() for i in range(20)]}, f)
    c100 = load_dataset("cifar100", "test", root=tmp_path, download=False)
    assert c100.labels.tolist() == [7, 99] and len(c100.classes) == 100 and c100.classes[99] == "f99"

    with open(folder / "test", "wb") as f:  # unpickling can run code: a CIFAR file may only hold arrays
        pickle.dump({b"data": os.getcwd}, f)
    with pytest.raises(CorruptDatasetError, match="getcwd has no place in a CIFAR file") as e:
        load_dataset("cifar100", "test", root=tmp_path, download=False)
    assert isinstance(e.value.__cause__, pickle.UnpicklingError)


def cut(path, keep: float = 0.5) -> None:
    """Truncate a file to its first `keep` fraction of bytes, like an interrupted download or copy."""
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep)])


def flip(path, at: float = 0.5) -> None:
    """Invert one byte, `at` of the way into the file."""
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * at)] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_damaged_fashion_mnist_names_the_file_and_the_remedy(tmp_path, no_debian):
    folder = tmp_path / "fashion-mnist"
    write_fashion(folder)
    train_images, test_images = (folder / data.FASHION_SPLITS[s][0] for s in ("train", "test"))
    cut(train_images)  # gzip: "Compressed file ended before the end-of-stream marker was reached"
    flip(test_images)  # gzip: a CRC check or the inflater fails
    for split, path in (("train", train_images), ("test", test_images)):
        with pytest.raises(CorruptDatasetError) as e:  # a DatasetNotFoundError: the CLI prints one `error:` line
            load_dataset("fashion-mnist", split, root=tmp_path, download=False)
        message = str(e.value)
        assert message.startswith(f"{path} is damaged (") and "Delete it and run again to download it afresh" in message
        assert "apt-get install dataset-fashion-mnist" in message and "\n" not in message
        assert split == "test" or "Compressed file ended" in message

    with gzip.open(train_images, "wb") as f:  # sound gzip, but the idx data stops short of what its header says
        f.write(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (5, 28, 28)) + bytes(28 * 28 * 4))
    with pytest.raises(CorruptDatasetError, match=re.escape(f"{train_images} is damaged (not a uint8 idx file of the")):
        load_dataset("fashion-mnist", root=tmp_path, download=False)


def test_damaged_debian_fashion_mnist_says_reinstall(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION", tmp_path / "debian")
    write_fashion(tmp_path / "debian")
    cut(tmp_path / "debian" / "t10k-labels-idx1-ubyte.gz", keep=0.9)
    with pytest.raises(CorruptDatasetError, match="t10k-labels-idx1-ubyte.gz is damaged .*"
                                                  "`sudo apt-get install --reinstall dataset-fashion-mnist`"):
        load_dataset("fashion-mnist", "test", root=tmp_path / "empty", download=False)


def test_damaged_cifar_names_the_file_and_the_remedy(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    cut(folder / "data_batch_3")
    flip(folder / "test_batch", at=0)  # the pickle's first opcode
    for split, name in (("train", "data_batch_3"), ("test", "test_batch")):
        with pytest.raises(CorruptDatasetError) as e:
            load_dataset("cifar10", split, root=tmp_path, download=False)
        assert str(e.value).startswith(f"{folder / name} is damaged or not a CIFAR file (")
        assert f"Delete it and run again to download CIFAR-10 afresh (or download {data.CIFAR[10][1]}" in str(e.value)


def test_stl10_binaries_are_upright(tmp_path):
    """STL-10 stores each channel column-major; images must come back upright and exact."""
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    x = rng.integers(0, 200, (2, 3, 96, 96), dtype=np.uint8)  # (N, C, H, W)
    x[:, :, 0, :] = 255  # top row bright: visibly upright
    x.transpose(0, 1, 3, 2).tofile(folder / "train_X.bin")  # column-major on disk
    np.array([1, 10], np.uint8).tofile(folder / "train_y.bin")  # 1-based
    (folder / "class_names.txt").write_text("".join(f"k{i}\n" for i in range(10)))
    x[:1].transpose(0, 1, 3, 2).tofile(folder / "unlabeled_X.bin")
    d = load_dataset("stl10", "train", root=tmp_path, download=False)
    assert d.images.shape == (2, 3, 96, 96) and torch.equal(d.images, torch.from_numpy(x))
    assert (d.images[:, :, 0] == 255).all() and (d.images[:, :, 1:] < 255).all()
    assert d.labels.tolist() == [0, 9] and d.classes == [f"k{i}" for i in range(10)]
    assert load_dataset("stl10", "unlabeled", root=tmp_path, download=False).labels.tolist() == [-1]


def make_image_folder(root, splits=("train", "val"), size=(40, 30)):
    """Red cats (PNG) and blue dogs (JPEG), 2 per class and split; the left quarter of each image is black."""
    for split in splits:
        for cls, colour, ext in (("cat", (255, 0, 0), "png"), ("dog", (0, 0, 255), "jpg")):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                image = Image.new("RGB", size, colour)
                image.paste((0, 0, 0), (0, 0, size[0] // 4, size[1]))
                image.save(root / split / cls / f"{i}.{ext}")


def test_image_folder_and_cache(tmp_path, monkeypatch):
    make_image_folder(tmp_path / "ds")
    d = load_dataset(f"imagefolder:{tmp_path / 'ds'}", "test", root=tmp_path / "cache", img_size=16)
    assert d.images.shape == (4, 3, 16, 16) and d.images.dtype == torch.uint8 and d.classes == ["cat", "dog"]
    assert d.labels.tolist() == [0, 0, 1, 1]
    # 40x30 -> 21x16 (shorter side 16), centre crop: columns 2.. of the crop; the black quarter ends at column ~5
    assert d.images[0, 0, :, 8:].float().mean() > 250 and d.images[3, 2, :, 8:].float().mean() > 240
    assert d.images[0, 0, :, :2].float().mean() < 10  # the black left edge survives the centre crop
    assert len(list((tmp_path / "cache" / "imagefolder-cache").glob("*.pt"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again instead of reading the cache")
    monkeypatch.setattr(data, "decode", no_decoding)
    again = load_dataset(f"imagefolder:{tmp_path / 'ds'}", "test", root=tmp_path / "cache", img_size=16)
    assert torch.equal(again.images, d.images) and torch.equal(again.labels, d.labels)
    monkeypatch.undo()
    train = load_dataset(f"imagefolder:{tmp_path / 'ds'}", "train", root=tmp_path / "cache", img_size=8)
    assert train.images.shape == (4, 3, 8, 8)
    assert len(list((tmp_path / "cache" / "imagefolder-cache").glob("*"))) == 2  # one file per (split, size)


def write_bad_images(folder) -> dict[str, str]:
    """Files with image names that cannot be decoded: {file: what the warning must say about it}."""
    noise = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    noise.save(folder / "cat" / "cut.png")
    cut(folder / "cat" / "cut.png")  # half a real PNG: an interrupted download
    noise.save(folder / "dog" / "cut.jpg")
    cut(folder / "dog" / "cut.jpg")
    (folder / "dog" / "404.jpg").write_text("<html>Not Found</html>")  # a web page saved under an image's name
    return {"cat/cut.png": "truncated", "dog/cut.jpg": "truncated", "dog/404.jpg": "not an image"}


def test_image_folder_skips_files_that_cannot_be_decoded(tmp_path, capsys, monkeypatch):
    """Undecodable files are skipped with one warning naming each, also on a rerun from the cache; the cache holds
    only the good images, and a replaced file is decoded again."""
    make_image_folder(tmp_path / "ds", splits=("",))  # 2 cats (PNG), 2 dogs (JPEG), class folders directly
    load = lambda: load_dataset(f"imagefolder:{tmp_path / 'ds'}", root=tmp_path / "cache", img_size=16)  # noqa: E731
    clean = load()
    bad = write_bad_images(tmp_path / "ds")
    (tmp_path / "ds" / "cat" / "notes.txt").write_text("not an image name: ignored, as before")
    capsys.readouterr()
    d = load()
    assert torch.equal(d.images, clean.images) and d.labels.tolist() == [0, 0, 1, 1] and d.classes == ["cat", "dog"]
    out, err = capsys.readouterr()
    assert out.startswith("decoding 7 images") and not ImageFile.LOAD_TRUNCATED_IMAGES
    assert err.startswith(f"warning: kept 4 of 7 images in {tmp_path / 'ds'}; skipped 3 that could not be decoded")
    lines = err.splitlines()[1:]
    assert len(lines) == 3 and "notes.txt" not in err
    for name, why in bad.items():
        assert any(line.startswith(f"  {tmp_path / 'ds' / name}: ") and why in line.lower() for line in lines), err

    def no_decoding(*args):
        raise AssertionError("decoded again instead of reading the cache")
    monkeypatch.setattr(data, "decode", no_decoding)
    again = load()  # from the cache, which holds the 4 good images and remembers the 3 bad files
    assert torch.equal(again.images, d.images) and torch.equal(again.labels, d.labels)
    assert capsys.readouterr() == ("", err)
    cached = [torch.load(f, weights_only=True) for f in (tmp_path / "cache" / "imagefolder-cache").glob("*.pt")]
    assert sorted(len(c["images"]) for c in cached) == [4, 4] and sorted(map(len, (c["skipped"] for c in cached))) \
        == [0, 3]
    monkeypatch.undo()

    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "ds" / "cat" / "cut.png")  # replaced by a good image
    fixed = load()
    assert fixed.labels.tolist() == [0, 0, 0, 1, 1]
    assert "kept 5 of 7 images" in capsys.readouterr().err


def test_image_folder_with_no_decodable_image_fails(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "ds" / cls).mkdir(parents=True)
    bad = write_bad_images(tmp_path / "ds")
    with pytest.raises(CorruptDatasetError, match="none of the 3 image files for split 'train' in .* could be "
                                                  "decoded:") as e:  # the CLI prints `error: <message>`
        load_dataset(f"imagefolder:{tmp_path / 'ds'}", root=tmp_path / "cache", img_size=16)
    for name, why in bad.items():
        assert f"  {tmp_path / 'ds' / name}: " in str(e.value) and why in str(e.value).lower()
    assert not (tmp_path / "cache" / "imagefolder-cache").exists()  # nothing cached


def test_image_folder_layouts(tmp_path):
    make_image_folder(tmp_path / "flat", splits=("",))  # class folders directly: a train split only
    assert load_dataset(f"imagefolder:{tmp_path / 'flat'}", root=tmp_path, img_size=8).labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(DatasetNotFoundError, match="train split only"):
        load_dataset(f"imagefolder:{tmp_path / 'flat'}", "test", root=tmp_path, img_size=8)

    tiny = tmp_path / "tiny-imagenet-200"  # train/<wnid>/images/*.JPEG, val/images/*.JPEG + val_annotations.txt
    for wnid in ("n01", "n02"):
        (tiny / "train" / wnid / "images").mkdir(parents=True)
        Image.new("RGB", (64, 64), (10, 20, 30)).save(tiny / "train" / wnid / "images" / f"{wnid}_0.JPEG")
        (tiny / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    (tiny / "val" / "images").mkdir(parents=True)
    for i, wnid in enumerate(("n02", "n01", "n02")):
        Image.new("RGB", (64, 64), (i * 100, 0, 0)).save(tiny / "val" / "images" / f"val_{i}.JPEG")
    (tiny / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t9\t9\nval_1.JPEG\tn01\t1\t1\t8\t8\n"
                                                       "val_2.JPEG\tn02\t0\t0\t5\t5\n")
    train = load_dataset(f"imagefolder:{tiny}", "train", root=tmp_path, img_size=32)
    val = load_dataset(f"imagefolder:{tiny}", "test", root=tmp_path, img_size=32)
    assert train.classes == val.classes == ["n01", "n02"] and train.labels.tolist() == [0, 1]
    assert val.labels.tolist() == [1, 0, 1] and val.images.shape == (3, 3, 32, 32)
    assert val.images[2, 0].float().mean() > 190  # val_2 is the brightest red

    with pytest.raises(DatasetNotFoundError, match="imagenette2-160.tgz"):
        load_dataset(f"imagefolder:{tmp_path / 'nothing'}", root=tmp_path)


def test_missing_datasets_say_how_to_get_them(tmp_path, no_debian, offline):
    with pytest.raises(DatasetNotFoundError, match="download=False.*cifar-10-python.tar.gz"):
        load_dataset("cifar10", root=tmp_path, download=False)
    with pytest.raises(DatasetNotFoundError, match="stl10_binary.tar.gz"):
        load_dataset("stl10", "unlabeled", root=tmp_path, download=False)
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path, download=False)
    for name, url in (("cifar100", "cifar-100-python.tar.gz"), ("stl10", "stl10_binary.tar.gz"),
                      ("fashion-mnist", "train-images-idx3-ubyte.gz")):
        with pytest.raises(DatasetNotFoundError, match=f"downloading .*{url} failed .*no network.*{url}") as e:
            load_dataset(name, root=tmp_path, download=True)
        assert isinstance(e.value.__cause__, urllib.error.URLError)


def test_default_root_and_bad_names(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIJEPA_DATA", str(tmp_path))
    assert data.default_root() == tmp_path
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "cifar-10-batches-py")):
        load_dataset("cifar10", download=False)
    with pytest.raises(ValueError, match="imagefolder:PATH"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="splits"):
        load_dataset("embedded", "unlabeled")


def test_random_resized_crop():
    images = load_dataset("embedded", "test").images[:16]  # (16, 1, 28, 28)
    a = random_resized_crop(images, 20, generator=torch.Generator().manual_seed(0))
    b = random_resized_crop(images, 20, generator=torch.Generator().manual_seed(0))
    c = random_resized_crop(images, 20, generator=torch.Generator().manual_seed(1))
    assert a.shape == (16, 1, 20, 20) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    x = images.float() / 255
    whole = random_resized_crop(images, 28, scale=(1, 1), ratio=(1, 1))
    assert torch.allclose(whole, x, atol=1e-6)  # the full image, unchanged
    half = random_resized_crop(images, 14, scale=(1, 1), ratio=(1, 1))
    assert torch.allclose(half, F.avg_pool2d(x, 2), atol=1e-6)  # shrinking averages: no aliasing
    assert torch.allclose(random_resized_crop(x, 28, scale=(1, 1), ratio=(1, 1)), x, atol=1e-6)  # float in [0, 1]
    flat = torch.full((4, 3, 32, 32), 77, dtype=torch.uint8)
    assert torch.allclose(random_resized_crop(flat, 16), torch.full((4, 3, 16, 16), 77 / 255))
    assert center_resize(images, 14).shape == (16, 1, 14, 14) and torch.equal(center_resize(images, 28), x)


def test_random_resized_crop_boxes():
    """A quarter-area square crop resized to its own size is an exact window of the image, at varying positions;
    when no try fits, the central crop with the aspect ratio clamped is used (as in torchvision)."""
    images = torch.arange(32 * 32, dtype=torch.float).view(1, 1, 32, 32).repeat(64, 1, 1, 1) / 1024  # all distinct
    out = random_resized_crop(images, 16, scale=(0.25, 0.25), ratio=(1, 1), generator=torch.Generator().manual_seed(0))
    corners = (out[:, 0, 0, 0] * 1024).round().long()  # top-left pixel of each crop = its index in the image
    y0, x0 = corners // 32, corners % 32
    for i in range(64):
        assert torch.allclose(out[i], images[i, :, y0[i]:y0[i] + 16, x0[i]:x0[i] + 16], atol=1e-6)
    assert 0 <= y0.min() and y0.max() <= 16 and 0 <= x0.min() and x0.max() <= 16 and len(set(corners.tolist())) > 20
    rows = torch.arange(8, dtype=torch.float).view(1, 1, 8, 1).expand(2, 1, 8, 8) / 10  # row y has value y / 10
    tall = random_resized_crop(rows, 8, scale=(0.9, 1), ratio=(4, 4))  # 4:1 never fits: central 8x2 crop, rows 3-4
    assert torch.allclose(tall.mean(), torch.tensor(0.35)) and 0.25 <= tall.min() and tall.max() <= 0.45  # +-0.5 px


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_random_resized_crop_same_on_gpu():
    images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8)
    cpu = random_resized_crop(images, 24, generator=torch.Generator().manual_seed(3))
    gpu = random_resized_crop(images.cuda(), 24, generator=torch.Generator().manual_seed(3))
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-5)


def test_mean_std_and_photos():
    for images in (load_dataset("embedded", "test").images, torch.randint(0, 256, (50, 3, 9, 7), dtype=torch.uint8)):
        mean, std = data.ImageDataset(images, torch.zeros(len(images), dtype=torch.long), [], "x").mean_std()
        x = images.float() / 255
        assert mean.shape == std.shape == (images.shape[1],)
        assert torch.allclose(mean, x.mean(dim=(0, 2, 3)), atol=1e-5)
        assert torch.allclose(std, x.std(dim=(0, 2, 3)), atol=1e-5)
    photos = load_photos(64)
    assert len(photos) == 5 and all(p.shape == (3, 64, 64) and p.dtype == torch.uint8 for _, p in photos)
    assert {name for name, _ in photos} >= {"astronaut", "chelsea"}
    assert all((p[0].float() - p[2].float()).abs().mean() > 1 for _, p in photos)  # colour, not grey
    assert load_photos()[0][1].shape == (3, 224, 224)


def test_normalise_per_channel_from_uint8_or_unit_floats():
    """uint8 and the same images in [0, 1] units normalise alike; each channel uses its own mean and std, so the
    normalised training set has mean 0 and std 1 per channel."""
    images = torch.from_numpy(rng.integers(0, 256, (64, 3, 8, 8), dtype=np.uint8))
    mean, std = data.ImageDataset(images, torch.zeros(64, dtype=torch.long), ["x"], "t").mean_std()
    x = normalise(images, mean, std)
    assert x.dtype == torch.float32 and x.shape == images.shape
    torch.testing.assert_close(x, normalise(images.float() / 255, mean, std))
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std((0, 2, 3)), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalise(images[:, :1], [0.5], [0.25]), (images[:, :1] / 255 - 0.5) / 0.25)
