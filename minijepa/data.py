"""Datasets as uint8 tensors in memory, and the paper's only augmentation (RandomResizedCrop, App. A).

    load_dataset("embedded" | "fashion-mnist" | "cifar10" | "cifar100" | "stl10" | "imagefolder:PATH", split)
        -> ImageDataset(images uint8 (N, C, H, W), labels int64 (N,), classes)

Files are parsed in their original on-disk formats (idx .gz, CIFAR pickles, STL-10 binaries, image folders);
torchvision is used only to *download* them. Without internet a missing dataset fails at once with a message that
says how to get it. Everything is small enough to live in (GPU) memory, so training needs no DataLoader.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

EMBEDDED = Path(__file__).resolve().parent.parent / "data"
DATASETS = ("embedded", "fashion-mnist", "cifar10", "cifar100", "stl10", "imagefolder:PATH")
FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


class DatasetNotFoundError(RuntimeError):
    pass


@dataclass
class ImageDataset(torch.utils.data.Dataset):
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,), -1 = unlabeled
    classes: list[str]
    name: str

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std in [0, 1] units, measured on (up to 10k of) the images: (C,), (C,)."""
        x = self.images[:: max(1, len(self.images) // 10_000)].float().div_(255)
        return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))


def default_root() -> Path:
    return Path(os.environ.get("MINIJEPA_DATA", Path.home() / ".cache" / "minijepa")).expanduser()


def load_dataset(name: str, split: str = "train", root: str | Path | None = None, download: bool = True,
                 img_size: int | None = None) -> ImageDataset:
    root = Path(root).expanduser() if root is not None else default_root()
    if name.startswith("imagefolder:"):
        return load_imagefolder(Path(name.split(":", 1)[1]).expanduser(), split, root, img_size or 64)
    loaders = {"embedded": lambda: read_idx_pair(EMBEDDED / "fashion-mnist-mini", split, "embedded"),
               "fashion-mnist": lambda: load_fashion_mnist(root, split, download),
               "cifar10": lambda: load_cifar(root, split, download, 10),
               "cifar100": lambda: load_cifar(root, split, download, 100),
               "stl10": lambda: load_stl10(root, split, download)}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    valid = ("train", "test", "unlabeled") if name == "stl10" else ("train", "test")
    if split not in valid:
        raise ValueError(f"{name} has splits {valid}, not {split!r}")
    return loaders[name]()


def fetch(download: bool, folder: Path, url: str, md5: str, how: str) -> None:
    """Download and unpack an archive with torchvision's downloader; fail with `how` when that is impossible."""
    if download:
        from torchvision.datasets.utils import download_and_extract_archive
        try:
            download_and_extract_archive(url, str(folder), md5=md5)
            return
        except Exception as e:  # offline, proxy, bad checksum ...
            reason = f"downloading {url} failed ({type(e).__name__}: {e})."
    else:
        reason = "download=False."
    raise DatasetNotFoundError(f"dataset not found in {folder} and {reason} {how}")


# ---------------------------------------------------------------------------------------------- Fashion-MNIST (idx)
def read_idx(path: Path) -> np.ndarray:
    """The idx format (LeCun): magic (2 zero bytes, dtype 0x08 = uint8, ndim), big-endian sizes, raw data."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an uint8 idx file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_idx_pair(folder: Path, split: str, name: str) -> ImageDataset:
    images, labels = (read_idx(folder / f) for f in FASHION_FILES[split])
    return ImageDataset(torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype(np.int64)),
                        FASHION_CLASSES, name)  # (N, 1, 28, 28)


def load_fashion_mnist(root: Path, split: str, download: bool) -> ImageDataset:
    candidates = [root, root / "fashion-mnist", root / "FashionMNIST" / "raw", DEBIAN_FASHION]
    for folder in candidates:
        if all((folder / f).exists() for f in FASHION_FILES[split]):
            return read_idx_pair(folder, split, "fashion-mnist")
    folder = root / "fashion-mnist"
    if download:  # torchvision's own downloader and mirrors; it writes FashionMNIST/raw/*.gz
        from torchvision.datasets import FashionMNIST
        try:
            FashionMNIST(str(root), train=split == "train", download=True)
            return read_idx_pair(root / "FashionMNIST" / "raw", split, "fashion-mnist")
        except Exception as e:
            reason = f"downloading failed ({type(e).__name__}: {e})."
    else:
        reason = "download=False."
    raise DatasetNotFoundError(
        f"Fashion-MNIST not found in {', '.join(map(str, candidates))} and {reason} Get it with "
        f"`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download the four files "
        f"{', '.join(f for pair in FASHION_FILES.values() for f in pair)} from "
        f"https://github.com/zalandoresearch/fashion-mnist into {folder}.")


# ----------------------------------------------------------------------------------------------- CIFAR (pickles)
CIFAR = {10: ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
              "c58f30108f718f92721af3b95e74349a"),
         100: ("cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
               "eb9058c3a382ffc7106e4002c42a8d85")}


def load_cifar(root: Path, split: str, download: bool, n_classes: int) -> ImageDataset:
    subdir, url, md5 = CIFAR[n_classes]
    folder = root / subdir
    files = ([f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]) \
        if n_classes == 10 else [split]
    if not all((folder / f).exists() for f in files):
        fetch(download, root, url, md5, f"Download {url} and unpack it into {root} (giving {folder}/).")
    key, meta, names = (b"labels", "batches.meta", b"label_names") if n_classes == 10 else \
        (b"fine_labels", "meta", b"fine_label_names")
    images, labels = [], []
    for f in files:
        with open(folder / f, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")  # the official format is a python pickle
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))  # rows are R, G, B planes
        labels.extend(batch[key])
    with open(folder / meta, "rb") as fh:
        classes = [c.decode() for c in pickle.load(fh, encoding="bytes")[names]]
    return ImageDataset(torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long), classes,
                        f"cifar{n_classes}")


# -------------------------------------------------------------------------------------------- STL-10 (binaries)
STL10_URL, STL10_MD5 = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb"


def load_stl10(root: Path, split: str, download: bool) -> ImageDataset:
    folder = root / "stl10_binary"
    if not (folder / f"{split}_X.bin").exists():
        fetch(download, root, STL10_URL, STL10_MD5, f"Download {STL10_URL} and unpack it into {root}.")
    x = np.fromfile(folder / f"{split}_X.bin", dtype=np.uint8).reshape(-1, 3, 96, 96)
    images = torch.from_numpy(x).transpose(2, 3).contiguous()  # stored column-major: swap to (N, C, H, W)
    y = folder / f"{split}_y.bin"
    labels = torch.from_numpy(np.fromfile(y, dtype=np.uint8).astype(np.int64) - 1) if y.exists() \
        else torch.full((len(images),), -1, dtype=torch.long)  # labels are 1-based; unlabeled split has none
    classes = (folder / "class_names.txt").read_text().split()
    return ImageDataset(images, labels, classes, "stl10")


# ----------------------------------------------------------------------------------------------- image folders
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG"}


def load_imagefolder(path: Path, split: str, root: Path, img_size: int) -> ImageDataset:
    """Class-per-folder images (Imagenette, ImageNet-100, Tiny-ImageNet's train/), resized (shorter side) and
    centre-cropped to img_size, decoded once and cached as a tensor file under root."""
    folder = next((path / s for s in ({"train": ["train"], "test": ["val", "test"]}[split]) if (path / s).is_dir()),
                  path)
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((folder / c).rglob("*"))
             if f.suffix in IMAGE_SUFFIXES]
    if not files:
        raise DatasetNotFoundError(
            f"no images in {folder}: expected {path}/train/<class>/*.jpg and {path}/val/<class>/*.jpg (or class "
            f"folders directly in {path}). E.g. Imagenette: download "
            f"https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz and unpack it, then use "
            f"--data imagefolder:/path/to/imagenette2-160")
    key = hashlib.sha256(f"{folder.resolve()}|{img_size}|{len(files)}".encode()).hexdigest()[:16]
    cache = root / "imagefolder-cache" / f"{key}.pt"
    if cache.exists():
        images = torch.load(cache, weights_only=True)
    else:
        images = torch.stack([decode(f, img_size) for f, _ in files])  # (N, 3, S, S)
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(images, cache.with_suffix(".tmp"))
        os.replace(cache.with_suffix(".tmp"), cache)
    labels = torch.tensor([i for _, i in files], dtype=torch.long)
    return ImageDataset(images, labels, classes, f"imagefolder:{path.name}")


def decode(path: Path, size: int) -> torch.Tensor:
    """One image file -> uint8 (3, size, size): RGB, shorter side resized to `size`, centre crop."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        s = size / min(im.size)
        im = im.resize((max(size, round(im.width * s)), max(size, round(im.height * s))), Image.BICUBIC)
        left, top = (im.width - size) // 2, (im.height - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


def load_photos(size: int = 224) -> list[tuple[str, torch.Tensor]]:
    """The embedded public-domain / CC0 colour photos (data/photos), uint8 (3, size, size) each."""
    return [(f.stem, decode(f, size)) for f in sorted((EMBEDDED / "photos").glob("*.jpg"))]


# -------------------------------------------------------------------------------------------------- augmentation
def random_resized_crop(images: torch.Tensor, size: int, scale: tuple[float, float] = (0.3, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Batched RandomResizedCrop: a crop of area ~U(scale) and log-aspect ~U(log ratio) at a uniform position per
    image, resized to size x size. uint8/float (B, C, H, W) -> float32 (B, C, size, size) in [0, 1] units.
    Random numbers come from `generator` on the CPU, so the same seed gives the same crops on any device."""
    B, _, H, W = images.shape
    area = torch.empty(B, 10).uniform_(*scale, generator=generator) * H * W  # 10 tries per image, like torchvision
    aspect = torch.exp(torch.empty(B, 10).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator))
    w, h = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()
    ok = (w <= W) & (h <= H) & (w > 0) & (h > 0)
    first = ok.float().argmax(1)  # first valid try, else fall back to the whole image
    w = torch.where(ok.any(1), w.gather(1, first[:, None])[:, 0], torch.tensor(float(W)))
    h = torch.where(ok.any(1), h.gather(1, first[:, None])[:, 0], torch.tensor(float(H)))
    u = torch.rand(B, 2, generator=generator)
    x0, y0 = (u[:, 0] * (W - w + 1)).floor(), (u[:, 1] * (H - h + 1)).floor()
    # affine grid: output pixel centres map into the crop box [x0, x0 + w) x [y0, y0 + h) (align_corners=False)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w / W, (2 * x0 + w) / W - 1
    theta[:, 1, 1], theta[:, 1, 2] = h / H, (2 * y0 + h) / H - 1
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    grid = F.affine_grid(theta.to(x.device), [B, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def center_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Evaluation transform: uint8/float (B, C, H, W) -> float (B, C, size, size) in [0, 1], no crop."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
