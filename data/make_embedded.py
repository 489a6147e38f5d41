"""Regenerate the embedded data in this folder (deterministic: same inputs, same bytes).

    python data/make_embedded.py [--fashion DIR] [--skimage-data DIR]

--fashion       folder with Fashion-MNIST's four original .gz files (default: Debian's dataset-fashion-mnist
                package, /usr/share/datasets/fashion-mnist)
--skimage-data  scikit-image's `skimage/data` folder, for the photos (e.g. unpack the wheel fetched by
                `pip download --no-deps scikit-image`); skipped when not given
"""
from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 600),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 100)}  # images per class
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg"]


def read_idx(path: Path) -> tuple[bytes, np.ndarray]:
    data = gzip.open(path, "rb").read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return data[:4], np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_idx(path: Path, magic: bytes, array: np.ndarray) -> None:
    header = magic + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(header + np.ascontiguousarray(array).tobytes())


def fashion_subset(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for images_file, labels_file, per_class in FILES.values():
        magic_x, x = read_idx(src / images_file)
        magic_y, y = read_idx(src / labels_file)
        keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                                       for c in range(10)]))
        write_idx(dst / images_file, magic_x, x[keep])
        write_idx(dst / labels_file, magic_y, y[keep])
        print(f"{dst / images_file}: {len(keep)} images ({per_class} per class)")


def photos(src: Path, dst: Path, size: int = 256) -> None:
    from PIL import Image
    dst.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        with Image.open(src / name) as im:
            im = im.convert("RGB")
            s = size / min(im.size)
            im = im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC)
            out = dst / (Path(name).stem + ".jpg")
            im.save(out, quality=90, optimize=True)
            print(f"{out}: {im.size}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fashion", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--skimage-data", type=Path, default=None)
    args = p.parse_args()
    fashion_subset(args.fashion, HERE / "fashion-mnist-mini")
    if args.skimage_data:
        photos(args.skimage_data, HERE / "photos")
