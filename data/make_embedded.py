"""Regenerate the embedded data in this folder (deterministic: the same inputs give the same bytes).

    python data/make_embedded.py [--fashion DIR] [--skimage-data DIR]

--fashion       a folder with Fashion-MNIST's four original .gz idx files (default: where Debian's
                `apt-get install dataset-fashion-mnist` puts them, /usr/share/datasets/fashion-mnist)
--skimage-data  scikit-image's `skimage/data` folder, for the photos; skipped when not given. E.g.
                `pip download --no-deps scikit-image==0.26.0 -d /tmp/skimage && cd /tmp/skimage && unzip -q *.whl`,
                then `--skimage-data /tmp/skimage/skimage/data` (the repo does not depend on scikit-image)

Needs only numpy and pillow.
"""
from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SEED = 0
# split: (images file, labels file, images kept per class)
SPLITS = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 600),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 100)}
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg"]  # PD / CC0
PHOTO_SIZE = 256  # shorter side, so that the 224x224 centre crop of `load_photos()` never upsamples


def read_idx(path: Path) -> tuple[bytes, np.ndarray]:
    """(magic bytes, array) of a gzipped idx file: 0, 0, dtype, ndim, big-endian int32 sizes, data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return raw[:4], np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_idx(path: Path, magic: bytes, array: np.ndarray) -> None:
    """Gzipped idx with a fixed header (no time stamp, no file name), so the bytes are reproducible."""
    header = magic + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(header + np.ascontiguousarray(array).tobytes())


def fashion_subset(src: Path, dst: Path) -> None:
    """A class-balanced random subset of each split, in the original order and format."""
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for images_file, labels_file, per_class in SPLITS.values():
        magic_x, x = read_idx(src / images_file)  # (N, 28, 28)
        magic_y, y = read_idx(src / labels_file)  # (N,)
        keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                                       for c in range(10)]))
        write_idx(dst / images_file, magic_x, x[keep])
        write_idx(dst / labels_file, magic_y, y[keep])
        print(f"{dst / images_file}: {len(keep)} images ({per_class} per class)")


def photos(src: Path, dst: Path) -> None:
    """Resize each photo to PHOTO_SIZE on the shorter side (bicubic) and save it as a JPEG of quality 90."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        with Image.open(src / name) as im:
            im = im.convert("RGB")
            s = PHOTO_SIZE / min(im.size)
            im = im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC)
            out = dst / (Path(name).stem + ".jpg")
            im.save(out, quality=90, optimize=True)
            print(f"{out}: {im.width}x{im.height}, {out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fashion", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--skimage-data", type=Path, default=None)
    args = p.parse_args()
    fashion_subset(args.fashion, HERE / "fashion-mnist-mini")
    if args.skimage_data:
        photos(args.skimage_data, HERE / "photos")
