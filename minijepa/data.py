"""Datasets as uint8 tensors in memory, and I-JEPA's only augmentation: RandomResizedCrop, scale (0.3, 1.0).

    load_dataset("embedded" | "fashion-mnist" | "cifar10" | "cifar100" | "stl10" | "imagefolder:PATH", split)
        -> ImageDataset(images uint8 (N, C, H, W), labels int64 (N,), classes, name)

Files are parsed in their original on-disk formats (idx .gz, CIFAR pickles, STL-10 binaries, folders of JPEG/PNG);
torchvision is only used to *download* them. A dataset that is missing and cannot be downloaded fails at once, with
a message that says how to get it; so does a damaged file (truncated, garbled). Image files that cannot be decoded
are skipped, with a warning that names them. Every dataset here fits in (GPU) memory, so training indexes one tensor
instead of running a DataLoader, and crops a whole batch at once on the device (`random_resized_crop`).
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torchvision.datasets import utils as tv_utils  # downloads only
from torchvision.ops import roi_align

EMBEDDED = Path(__file__).resolve().parent.parent / "data"  # the repo's data/ folder: embedded data only
DATASETS = ("embedded", "fashion-mnist", "cifar10", "cifar100", "stl10", "imagefolder:PATH")
IMAGEFOLDER_SIZE = 160  # default img_size for image folders: imagenette2-160's shorter side (crops shrink it later)

FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"  # torchvision's mirror
FASHION_MD5 = {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
               "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
               "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
               "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}
FASHION_SPLITS = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")  # `apt-get install dataset-fashion-mnist`
# n_classes: (folder in the archive, archive URL, its md5, label key, meta file, class-names key)
CIFAR = {10: ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
              "c58f30108f718f92721af3b95e74349a", b"labels", "batches.meta", b"label_names"),
         100: ("cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
               "eb9058c3a382ffc7106e4002c42a8d85", b"fine_labels", "meta", b"fine_label_names")}
STL10_URL, STL10_MD5 = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb"
IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class DatasetNotFoundError(RuntimeError):
    """A dataset is neither on disk nor downloadable; the message says how to get it."""


class CorruptDatasetError(DatasetNotFoundError):
    """A dataset file is on disk but damaged (truncated, garbled); the message names it and says how to get it again."""


def first_line(e: BaseException) -> str:
    """An exception's message, first line only (its type if it has no message): enough to say why a file is bad."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


@dataclass
class ImageDataset(torch.utils.data.Dataset):
    """A whole image dataset in memory."""
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,), -1 where unlabeled (STL-10's unlabeled split)
    classes: list[str]
    name: str

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std in [0, 1] units, (C,) each, measured on (at most ~10k evenly spaced of) the
        images. Sums run in float64 chunks, so large images never need a float copy of the whole dataset."""
        x = self.images[:: max(1, len(self.images) // 10_000)]  # (n, C, H, W)
        total, squares = torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], dtype=torch.float64)
        for chunk in x.split(256):
            chunk = chunk.double()
            total += chunk.sum(dim=(0, 2, 3))
            squares += chunk.square().sum(dim=(0, 2, 3))
        n = x.shape[0] * x.shape[2] * x.shape[3]  # values per channel
        mean = total / n
        std = ((squares - n * mean ** 2) / (n - 1)).sqrt()  # unbiased, like torch.std
        return (mean / 255).float(), (std / 255).float()


def default_root() -> Path:
    """Where datasets are downloaded and image folders cached: $MINIJEPA_DATA, else ~/.cache/minijepa."""
    return Path(os.environ.get("MINIJEPA_DATA") or Path.home() / ".cache" / "minijepa").expanduser()


def load_dataset(name: str, split: str = "train", root: str | Path | None = None, download: bool = True,
                 img_size: int | None = None) -> ImageDataset:
    """Load a dataset (see DATASETS) into memory. split: "train" | "test", STL-10 also "unlabeled". root: where
    downloads go (default `default_root()`). img_size: only for "imagefolder:PATH" (default IMAGEFOLDER_SIZE);
    the other datasets keep their native size."""
    if name not in DATASETS[:-1] and not name.startswith("imagefolder:"):
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    splits = ("train", "test", "unlabeled") if name == "stl10" else ("train", "test")
    if split not in splits:
        raise ValueError(f"{name} has the splits {splits}, not {split!r}")
    root = Path(root).expanduser() if root is not None else default_root()
    if name == "embedded":  # a subset of Fashion-MNIST committed with the repo: always offline
        return read_fashion(EMBEDDED / "fashion-mnist-mini", split, "embedded",
                            "It ships with the repository: restore it with `git checkout -- data/fashion-mnist-mini`.")
    if name == "fashion-mnist":
        return load_fashion_mnist(root, split, download)
    if name in ("cifar10", "cifar100"):
        return load_cifar(root, split, download, int(name[len("cifar"):]))
    if name == "stl10":
        return load_stl10(root, split, download)
    path = Path(name[len("imagefolder:"):]).expanduser()
    return load_imagefolder(path, split, root, img_size or IMAGEFOLDER_SIZE)


def find(folders: list[Path], files: list[str]) -> Path | None:
    """The first folder that holds all the files."""
    return next((d for d in folders if all((d / f).is_file() for f in files)), None)


def fetch(urls: dict[str, str], into: Path, download: bool, not_found: str, fix: str) -> None:
    """Download {url: md5} into `into` with torchvision's downloader (unpacking, then deleting, .tar.gz), or raise
    DatasetNotFoundError saying what is missing, why it could not be downloaded, and how to get it by hand."""
    if not download:
        raise DatasetNotFoundError(f"{not_found} (download=False). {fix}")
    for url, md5 in urls.items():
        try:
            if url.endswith(".tar.gz"):
                tv_utils.download_and_extract_archive(url, str(into), md5=md5, remove_finished=True)
            else:
                tv_utils.download_url(url, str(into), md5=md5)
        except Exception as e:  # offline, firewall, moved mirror, bad checksum, ...
            raise DatasetNotFoundError(f"{not_found}; downloading {url} failed ({type(e).__name__}: {e}). {fix}") from e


# ----------------------------------------------------------------------------------------------- Fashion-MNIST (idx)
def read_idx(path: Path, fix: str) -> np.ndarray:
    """LeCun's idx format: 2 zero bytes, a dtype byte (0x08 = uint8), ndim, ndim big-endian int32 sizes, the data.
    A damaged file raises CorruptDatasetError naming it, followed by `fix` (how to get it again). gzip checks a CRC-32
    of all the data, and the size must match the header: that catches truncated and garbled files, whichever copy
    (the downloaded one, Debian's recompressed one) is read, at no extra cost."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # not gzip, cut short, or failing the CRC check
        raise CorruptDatasetError(f"{path} is damaged ({first_line(e)}). {fix}") from e
    ndim = raw[3] if len(raw) > 3 else 0
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if raw[:3] != b"\x00\x00\x08" or ndim == 0 or len(raw) != 4 + 4 * ndim + math.prod(shape):
        raise CorruptDatasetError(f"{path} is damaged (not a uint8 idx file of the size its header gives). {fix}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_fashion(folder: Path, split: str, name: str, fix: str) -> ImageDataset:
    """The split's two idx files in `folder`; `fix` says how to get a damaged one again."""
    images, labels = (read_idx(folder / f, fix) for f in FASHION_SPLITS[split])  # (N, 28, 28), (N,)
    return ImageDataset(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                        FASHION_CLASSES, name)  # images (N, 1, 28, 28)


def load_fashion_mnist(root: Path, split: str, download: bool) -> ImageDataset:
    places = [root, root / "fashion-mnist", root / "FashionMNIST" / "raw", DEBIAN_FASHION]
    folder = find(places, FASHION_SPLITS[split])
    if folder is None:
        folder = root / "fashion-mnist"
        fetch({FASHION_URL + f: md5 for f, md5 in FASHION_MD5.items()}, folder, download,
              f"Fashion-MNIST is not in any of {', '.join(map(str, places))}",
              f"Get it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download the four files "
              f"{', '.join(FASHION_MD5)} from {FASHION_URL} (see https://github.com/zalandoresearch/fashion-mnist) "
              f"into {folder}/")
    fix = ("Reinstall it with `sudo apt-get install --reinstall dataset-fashion-mnist`." if folder == DEBIAN_FASHION
           else f"Delete it and run again to download it afresh from {FASHION_URL} (or get Fashion-MNIST with "
                f"`sudo apt-get install dataset-fashion-mnist`).")
    return read_fashion(folder, split, "fashion-mnist", fix)


# --------------------------------------------------------------------------------------------------- CIFAR (pickles)
class NumpyUnpickler(pickle.Unpickler):
    """CIFAR ships python pickles, and unpickling can run any code: allow only what numpy arrays and bytes need."""
    def find_class(self, module: str, name: str):
        if (module.split(".")[0] == "numpy" and name in ("_reconstruct", "_frombuffer", "ndarray", "dtype")) or \
                (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} has no place in a CIFAR file")


def unpickle(path: Path, fix: str) -> dict:
    """A CIFAR pickle (written by python 2: keys and strings are bytes). A truncated or garbled one, or one holding
    more than arrays, raises CorruptDatasetError naming it, followed by `fix` (how to get it again)."""
    try:
        with open(path, "rb") as f:
            return NumpyUnpickler(f, encoding="bytes").load()
    except Exception as e:  # a damaged pickle fails in many ways: EOFError, UnpicklingError, ValueError, KeyError, ...
        raise CorruptDatasetError(f"{path} is damaged or not a CIFAR file ({first_line(e)}). {fix}") from e


def load_cifar(root: Path, split: str, download: bool, n_classes: int) -> ImageDataset:
    subdir, url, md5, label_key, meta, names_key = CIFAR[n_classes]
    if n_classes == 10:
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    else:
        files = [split]
    folder = find([root / subdir, root], files + [meta])
    if folder is None:
        folder = root / subdir
        fetch({url: md5}, root, download, f"CIFAR-{n_classes} is not in {folder}",
              f"Download {url} and unpack it in {root} (`tar xzf {url.rsplit('/', 1)[1]} -C {root}`), "
              f"which gives {folder}/")
    fix = f"Delete it and run again to download CIFAR-{n_classes} afresh (or download {url} and unpack it in {root})."
    batches = [unpickle(folder / f, fix) for f in files]
    # each row of b"data" is one image: 1024 red values, then 1024 green, then 1024 blue, each 32x32 row-major
    images = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
    labels = torch.tensor([y for b in batches for y in b[label_key]], dtype=torch.long)
    classes = [c.decode() for c in unpickle(folder / meta, fix)[names_key]]
    return ImageDataset(torch.from_numpy(images), labels, classes, f"cifar{n_classes}")  # (N, 3, 32, 32)


# ------------------------------------------------------------------------------------------------- STL-10 (binaries)
def load_stl10(root: Path, split: str, download: bool) -> ImageDataset:
    files = [f"{split}_X.bin", "class_names.txt"] + ([f"{split}_y.bin"] if split != "unlabeled" else [])
    folder = find([root / "stl10_binary", root], files)
    if folder is None:
        folder = root / "stl10_binary"
        fetch({STL10_URL: STL10_MD5}, root, download, f"STL-10 ({split}) is not in {folder}",
              f"Download {STL10_URL} (2.6 GB) and unpack it in {root}, which gives {folder}/")
    x = np.fromfile(folder / f"{split}_X.bin", dtype=np.uint8).reshape(-1, 3, 96, 96)  # (N, C, W, H): column-major
    images = torch.from_numpy(x).transpose(2, 3).contiguous()  # (N, C, H, W), upright
    if split == "unlabeled":
        labels = torch.full((len(images),), -1, dtype=torch.long)
    else:  # one byte per image, 1-based
        labels = torch.from_numpy(np.fromfile(folder / f"{split}_y.bin", dtype=np.uint8).astype(np.int64)) - 1
    classes = (folder / "class_names.txt").read_text().split()
    return ImageDataset(images, labels, classes, "stl10")


# ----------------------------------------------------------------------------------------------------- image folders
def imagefolder_files(path: Path, split: str) -> tuple[Path, list[tuple[Path, int]], list[str]]:
    """(split folder, [(image file, label)], classes). Layouts: PATH/{train,val or test}/<class>/**/*.jpg
    (Imagenette; Tiny-ImageNet's train/), Tiny-ImageNet's val/images/*.JPEG + val/val_annotations.txt, or class
    folders directly in PATH (then PATH is the train split and there is no test split)."""
    train = path / "train" if (path / "train").is_dir() else path
    classes = sorted(d.name for d in train.iterdir() if d.is_dir()) if train.is_dir() else []
    held_out = [path / s for s in ("val", "test") if (path / s).is_dir() and train != path]
    folder = train if split == "train" else held_out[0] if held_out else None
    if folder is None or not classes:
        return path, [], classes
    if (folder / "val_annotations.txt").is_file():  # Tiny-ImageNet: "file <tab> class <tab> box" per line
        index = {c: i for i, c in enumerate(classes)}
        rows = [line.split("\t")[:2] for line in (folder / "val_annotations.txt").read_text().splitlines() if line]
        return folder, [(folder / "images" / f, index[c]) for f, c in sorted(rows)], classes
    files = [(f, i) for i, c in enumerate(classes) if (folder / c).is_dir() for f in sorted((folder / c).rglob("*"))
             if f.suffix.lower() in IMAGE_SUFFIXES]
    return folder, files, classes


def load_imagefolder(path: Path, split: str, root: Path, img_size: int) -> ImageDataset:
    """Decode every image once (in parallel) to uint8 (3, img_size, img_size): shorter side resized, centre crop.
    Files that cannot be decoded (truncated, not an image) are skipped, with a warning on stderr that names them.
    The images kept and the files skipped are cached in root/imagefolder-cache/, keyed by the folder, split, size and
    every file's name, size and modification time: a rerun warns again, and a replaced file is decoded again."""
    folder, files, classes = imagefolder_files(path, split)
    if not files:
        raise DatasetNotFoundError(
            f"no images for split {split!r} under {path}. Expected {path}/train/<class>/*.jpg and "
            f"{path}/val/<class>/*.jpg (or test/), or class folders directly in {path} (train split only). "
            f"E.g. Imagenette: download {IMAGENETTE_URL}, unpack it with `tar xzf imagenette2-160.tgz -C ~/data`, "
            f"then use imagefolder:~/data/imagenette2-160")
    names = [str(f.relative_to(folder)) for f, _ in files]
    listing = "\n".join([str(folder.resolve()), split, str(img_size)] +
                        [f"{n} {stamp(f)}" for n, (f, _) in zip(names, files)])
    cache = root / "imagefolder-cache" / f"{hashlib.sha256(listing.encode()).hexdigest()[:20]}.pt"
    if cache.is_file():
        cached = torch.load(cache, weights_only=True)
        images, skipped = cached["images"], cached["skipped"]
    else:
        print(f"decoding {len(files)} images in {folder} to {img_size}x{img_size} (once; cached in {cache})")
        images = torch.empty(len(files), 3, img_size, img_size, dtype=torch.uint8)  # (N, 3, S, S)
        skipped: dict[str, str] = {}  # file (relative to the folder) -> why it could not be decoded
        with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:  # PIL releases the GIL while decoding
            for i, image in enumerate(pool.map(lambda f: try_decode(f[0], img_size), files)):
                if isinstance(image, str):
                    skipped[names[i]] = image
                else:
                    images[i] = image
        if len(skipped) == len(files):
            raise CorruptDatasetError(f"none of the {len(files)} image files for split {split!r} in {folder} could "
                                      f"be decoded:\n{list_files(folder, skipped)}")
        if skipped:
            images = images[[i for i, n in enumerate(names) if n not in skipped]]
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        torch.save({"images": images, "skipped": skipped}, tmp)
        os.replace(tmp, cache)  # atomic: a killed run never leaves half a cache file
    if skipped:
        print(f"warning: kept {len(images)} of {len(files)} images in {folder}; skipped {len(skipped)} that could "
              f"not be decoded (replace or delete them):\n{list_files(folder, skipped)}", file=sys.stderr)
    labels = torch.tensor([label for n, (_, label) in zip(names, files) if n not in skipped], dtype=torch.long)
    return ImageDataset(images, labels, classes, f"imagefolder:{path.name}")


def stamp(path: Path) -> str:
    """A file's size and modification time, for the cache key ("missing" if it is not there: it is then skipped)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    return f"{st.st_size} {st.st_mtime_ns}"


def try_decode(path: Path, size: int) -> torch.Tensor | str:
    """decode(), or why the file cannot be decoded. Truncated files fail too: PIL's LOAD_TRUNCATED_IMAGES stays off,
    so a cut-short image is reported instead of being padded with grey."""
    try:
        return decode(path, size)
    except UnidentifiedImageError:
        return "not an image PIL can read"
    except Exception as e:  # a damaged file fails in many ways: OSError ("image file is truncated"), SyntaxError, ...
        return first_line(e)


def list_files(folder: Path, why: dict[str, str], most: int = 10) -> str:
    """One indented line per file, "folder/file: why", the first `most` of them."""
    lines = [f"  {folder / name}: {reason}" for name, reason in list(why.items())[:most]]
    return "\n".join(lines + ([f"  ... and {len(why) - most} more"] if len(why) > most else []))


def decode(path: Path, size: int) -> torch.Tensor:
    """One image file -> uint8 (3, size, size): RGB, shorter side resized to `size` (bicubic), centre crop."""
    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # JPEG: let the decoder shrink by 2/4/8 while staying >= size (much faster)
        im = im.convert("RGB")
        s = size / min(im.size)
        im = im.resize((max(size, round(im.width * s)), max(size, round(im.height * s))), Image.BICUBIC)
        left, top = (im.width - size) // 2, (im.height - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)  # (3, size, size)


def load_photos(size: int = 224) -> list[tuple[str, torch.Tensor]]:
    """The embedded public-domain / CC0 colour photos (data/photos): [(name, uint8 (3, size, size))]."""
    return [(f.stem, decode(f, size)) for f in sorted((EMBEDDED / "photos").glob("*.jpg"))]


# ------------------------------------------------------------------------------------------------------ augmentation
def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (0-255) or float (already in [0, 1] units) images -> float32 in [0, 1] units."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The encoder's input: uint8 or [0, 1] float (B, C, H, W) -> (x - mean) / std per channel, with the training
    set's mean and std (C,) in [0, 1] units (`ImageDataset.mean_std`, kept in every checkpoint as `norm`)."""
    x = to_unit(images)
    return (x - torch.as_tensor(mean).to(x).view(-1, 1, 1)) / torch.as_tensor(std).to(x).view(-1, 1, 1)


def random_resized_crop(images: torch.Tensor, size: int, scale: tuple[float, float] = (0.3, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Batched RandomResizedCrop, as in torchvision but for a whole batch in one call on any device.
    uint8 or float (B, C, H, W) -> float32 (B, C, size, size) in [0, 1] units (uint8 is divided by 255).
    Per image: area ~ U(scale) * H * W, log aspect ~ U(log ratio), the first of 10 tries that fits (else the
    central crop), a uniform position. The random numbers come from `generator` on the CPU, so a seed gives the
    same crops on every device."""
    B, _, H, W = images.shape
    area = H * W * torch.empty(B, 10).uniform_(scale[0], scale[1], generator=generator)  # (B, 10 tries)
    aspect = torch.empty(B, 10).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator).exp()
    w, h = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()  # (B, 10)
    fits = (w > 0) & (w <= W) & (h > 0) & (h <= H)
    first = fits.int().argmax(dim=1, keepdim=True)  # (B, 1): the first try that fits
    found = fits.any(dim=1)  # (B,)
    fw, fh = W, H  # fallback: the whole image, its aspect ratio clamped into `ratio`
    if W / H < ratio[0]:
        fh = round(W / ratio[0])
    elif W / H > ratio[1]:
        fw = round(H * ratio[1])
    w = torch.where(found, w.gather(1, first).squeeze(1), float(fw))  # (B,)
    h = torch.where(found, h.gather(1, first).squeeze(1), float(fh))
    u = torch.rand(B, 2, generator=generator)
    x0 = torch.where(found, (u[:, 0] * (W - w + 1)).floor(), float((W - fw) // 2))  # (B,) left edge, in pixels
    y0 = torch.where(found, (u[:, 1] * (H - h + 1)).floor(), float((H - fh) // 2))
    boxes = torch.stack([torch.arange(B, dtype=torch.float), x0, y0, x0 + w, y0 + h], dim=1)  # (B, 5)
    x = to_unit(images)
    # roi_align resamples every box to size x size bins at once; aligned=True puts pixel centres at +0.5, and each
    # bin averages ceil(box / size)^2 bilinear samples, so shrinking a large crop does not alias. Unlike crop-then-
    # resize, samples near the box edge may blend in the pixel just outside it (at most half a pixel away).
    return roi_align(x, boxes.to(x.device), size, aligned=True)  # (B, C, size, size)


def center_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Evaluation transform, no crop: uint8 or float (B, C, H, W) -> float32 (B, C, size, size) in [0, 1] units."""
    x = to_unit(images)
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def prepare_images(images: torch.Tensor, img_size: int, mean: torch.Tensor, std: torch.Tensor,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """The encoder's evaluation input: uint8 or [0, 1] float images (B, C, H, W) -> scaled to [0, 1], resized to
    img_size x img_size if they differ (no crop), normalised with mean/std (C,): float32 (B, C, S, S) on `device`."""
    x = center_resize(images.to(device) if device is not None else images, img_size)
    return normalise(x, mean, std)
