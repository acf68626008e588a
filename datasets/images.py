"""Image-classification datasets: class folders, decoded with Pillow, and the image front end.

Layout (``open_image_folder``)::

    root/train/<class>/*.png|jpg|…    required
    root/val/<class>/*                 required unless test/ exists
    root/test/<class>/*                optional

Splits as the pipeline uses them: ``train`` trains the weights and ``val`` (the split that drives
the architecture and data logits) is held out from ``train/`` (seeded, stratified by class);
``test`` is ``test/``, or ``val/`` when there is no ``test/``. The test split is never read during
the search.

Checks, each a one-line :class:`DataError` naming the folder or file: a missing ``train/``, an
empty class folder, a class in ``val/``/``test/`` that ``train/`` lacks, a file that is not an
image (by extension) or that Pillow cannot decode. Handled as a user would expect, and said so
(``data.images`` event, ``dataset_info``): grey, palette and RGBA images become RGB; images of
another size than the dataset's most common one (its *source* size) are resized to it.

The front end (:func:`front_end_matrices`, :func:`transform`): uint8 RGB [H, W, 3] → float in
[0, 1] → antialiased bilinear resize to the data configuration's resolution, as two matrix
products (rows, then columns: exact in ONNX and TFLite alike) → optional grey (ITU-R 601 luma).
"""

from __future__ import annotations

import os
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.datasets.base import class_counts, hash_rank, held_out_count, split_fingerprint
from edgenas.errors import DataError
from edgenas.events import EventSink, null_sink, progress

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
IGNORED = ("Thumbs.db", "desktop.ini")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L" mode


@dataclass(frozen=True)
class ImageItem:
    path: str
    label: int


@dataclass
class ImageDataset:
    """A labelled image dataset; ``size`` is the source (most common) image size, (H, W)."""

    name: str
    root: str
    classes: list[str]
    splits: dict[str, list[ImageItem]]
    size: tuple[int, int]
    notes: list[str] = field(default_factory=list)  # what was handled (grey → RGB, resized, …)
    modes: dict[str, int] = field(default_factory=dict)  # Pillow mode → images
    unused: list[str] = field(default_factory=list)  # folders present but not read (val/ beside test/)
    synthetic: bool = False

    def fingerprint(self) -> str:
        """Stable hash of name, root, source size, classes and splits (paths, labels)."""
        return split_fingerprint(f"{self.name}\0{self.root}\0{self.size}\0", self.classes, self.splits,
                                 lambda it: f"{it.path}\0{it.label}\n")

    def counts(self) -> dict[str, list[int]]:
        """Per split, the number of images of each class."""
        return class_counts(self.splits, len(self.classes))


def is_image_folder(root: Path) -> bool:
    """True when ``root`` has the image-folder layout (``train/`` of class folders)."""
    tr = root / "train"
    return tr.is_dir() and any(p.is_dir() for p in tr.iterdir())


def _files(folder: Path) -> list[Path]:
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.name in IGNORED:
            continue
        if p.is_dir():
            raise DataError(f"{p} is a folder inside class folder {folder}; expected image files only")
        if p.suffix.lower() not in IMAGE_EXTS:
            raise DataError(f"{p} is not an image file (expected {', '.join(IMAGE_EXTS)})")
        out.append(p)
    return out


def _class_folders(split_dir: Path) -> dict[str, list[Path]]:
    folders = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in split_dir.iterdir() if p.is_file() and not p.name.startswith(".") and p.name not in IGNORED]
    if loose:
        raise DataError(f"{sorted(loose)[0]} lies directly in {split_dir}; put images in class folders "
                        f"({split_dir}/<class>/)")
    out = {}
    for f in folders:
        files = _files(f)
        if not files:
            raise DataError(f"class folder {f} has no images")
        out[f.name] = files
    return out


def _header(path: Path) -> tuple[tuple[int, int], str]:
    """(H, W) and Pillow mode from the file header (pixels are decoded later)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return (im.height, im.width), im.mode
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from None


def held_out(items: list[ImageItem], fraction: float, seed: int,
             root: str = "") -> tuple[list[ImageItem], list[ImageItem]]:
    """(kept, held out): about ``fraction`` of every class (at least one image of a class with two
    or more), chosen by hashing the seed and the path relative to ``root``, so the split is the
    same on every run and wherever the dataset folder lies."""
    by_class: dict[int, list[ImageItem]] = {}
    for it in items:
        by_class.setdefault(it.label, []).append(it)
    keep, out = [], []
    for label in sorted(by_class):
        members = by_class[label]
        group = [members[i] for i in hash_rank([os.path.relpath(it.path, root) if root else it.path for it in members], seed)]
        k = held_out_count(len(group), fraction)
        out += group[:k]
        keep += group[k:]
    order = {it.path: i for i, it in enumerate(items)}
    return sorted(keep, key=lambda it: order[it.path]), sorted(out, key=lambda it: order[it.path])


def open_image_folder(root: str | Path, *, val_fraction: float = 0.1, seed: int = 0,
                      sink: EventSink | None = None) -> ImageDataset:
    """Read the layout and every file's header (module doc); decode nothing yet."""
    sink = sink or null_sink
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"dataset path {root} does not exist or is not a folder")
    if not (root / "train").is_dir():
        raise DataError(f"{root} has no train/ folder (expected train/<class>/*, val/<class>/*, optional test/)")
    if not 0 < val_fraction < 1:
        raise DataError(f"the held-out fraction of train/ must be in (0, 1), got {val_fraction}")
    train = _class_folders(root / "train")
    if not train:
        raise DataError(f"{root / 'train'} has no class folders")
    classes = sorted(train)
    if len(classes) < 2:
        raise DataError(f"{root / 'train'} has images of 1 class ({classes[0]}); at least 2 classes are needed "
                        "to train a classifier")
    extra = {}
    for name in ("val", "test"):
        if (root / name).is_dir():
            folders = _class_folders(root / name)
            unknown = sorted(set(folders) - set(classes))
            if unknown:
                raise DataError(f"{root / name / unknown[0]} is a class that {root / 'train'} does not have")
            extra[name] = folders
    if not extra:
        raise DataError(f"{root} has neither val/ nor test/: one of them is the test split")
    index = {c: i for i, c in enumerate(classes)}

    def items(folders: dict[str, list[Path]]) -> list[ImageItem]:
        return [ImageItem(str(p), index[c]) for c in sorted(folders) for p in folders[c]]

    all_items = items(train) + [it for f in extra.values() for it in items(f)]
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    with progress(sink, "image headers read", len(all_items)) as tick:
        for it in all_items:
            size, mode = _header(Path(it.path))
            sizes[size] += 1
            modes[mode] += 1
            tick()
    size = sizes.most_common(1)[0][0]
    notes = []
    other = sum(n for s, n in sizes.items() if s != size)
    if other:
        notes.append(f"{other} image(s) not {size[1]}x{size[0]} px are resized to it (the most common size)")
    not_rgb = {m: n for m, n in modes.items() if m != "RGB"}
    if not_rgb:
        notes.append(f"{sum(not_rgb.values())} image(s) in mode(s) {', '.join(sorted(not_rgb))} are converted to RGB")
    kept, search_val = held_out(items(train), val_fraction, seed, root=str(root))
    test_name = "test" if "test" in extra else "val"
    ds = ImageDataset(name=root.name, root=str(root), classes=classes,
                      splits={"train": kept, "val": search_val, "test": items(extra[test_name])},
                      size=size, notes=notes, modes=dict(modes),
                      unused=["val"] if test_name == "test" and "val" in extra else [])
    for note in notes:
        sink("data.images", message=f"{root.name}: {note}")
    return ds


def decode(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """One image as uint8 RGB [H, W, 3] at ``size`` (H, W): converted to RGB and, when its size
    differs, resized with Pillow's bilinear filter. A file Pillow cannot decode is a DataError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode != "RGB":
                im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "PA", "LA") else im.convert("RGB")
            if (im.height, im.width) != tuple(size):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from None


def check_image_file(path: str | Path) -> None:
    """Decode every pixel of ``path`` (a one-line DataError naming it when that fails)."""
    decode(path, _header(Path(path))[0])


def _cache_path(ds: ImageDataset, split: str, cache_dir: str | Path | None) -> Path:
    if cache_dir is None:
        from edgenas.datasets.base import default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir) / "images" / f"{ds.name}-{ds.fingerprint()}" / f"{split}.u8.npy"


def load_pixels(ds: ImageDataset, split: str, *, cache_dir: str | Path | None = None, sink: EventSink | None = None) -> np.ndarray:
    """Every image of ``split`` as uint8 [N, H, W, 3] at the source size (decoded once, cached)."""
    sink = sink or null_sink
    path = _cache_path(ds, split, cache_dir)
    n = len(ds.splits[split])
    if path.is_file():
        try:
            arr = np.load(path, mmap_mode=None, allow_pickle=False)
            if arr.shape == (n, *ds.size, 3) and arr.dtype == np.uint8:
                return arr
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt
    out = np.empty((n, *ds.size, 3), dtype=np.uint8)
    with progress(sink, f"{split} images decoded", n) as tick:
        for i, it in enumerate(ds.splits[split]):
            out[i] = decode(it.path, ds.size)
            tick()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        np.save(f, out, allow_pickle=False)
    os.replace(tmp, path)
    return out


def resize_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] weights of an antialiased bilinear (triangle-filter) resize along one axis:
    pixel centres aligned (half-pixel), the filter widened by the scale when downsizing (as
    Pillow's BILINEAR), each row summing to 1."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale - 0.5
    j = np.arange(n_in)
    w = np.clip(1.0 - np.abs(j[None, :] - centres[:, None]) / support, 0.0, None)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def front_end_matrices(cfg: Any, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(rows [r, H], cols [r, W], luma [3] or None): the image front end of data configuration
    ``cfg`` (``resolution``, ``colour``) for source images of ``size`` (H, W)."""
    r = cfg.resolution
    return resize_matrix(r, size[0]), resize_matrix(r, size[1]), (LUMA if cfg.colour == "grey" else None)


def transform(pixels: np.ndarray, cfg: Any, batch: int = 1024) -> np.ndarray:
    """uint8 [N, H, W, 3] → float32 model inputs [N, C, r, r] (module doc), C = 3 or 1 (grey)."""
    rows, cols, luma = front_end_matrices(cfg, pixels.shape[1:3])
    c = 1 if luma is not None else 3
    out = np.empty((len(pixels), c, rows.shape[0], cols.shape[0]), dtype=np.float32)
    for i in range(0, len(pixels), batch):
        x = pixels[i:i + batch].astype(np.float32) / 255.0  # [n, H, W, 3]
        if luma is not None:
            x = (x @ luma)[..., None]
        y = np.einsum("rh,nhwc->nrwc", rows, x)
        out[i:i + batch] = np.einsum("nrwc,sw->ncrs", y, cols)
    return out


# ---- CIFAR-10 download -------------------------------------------------------------------
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"


def download_cifar10(cache_dir: str | Path | None = None, url: str | None = None, sha256: str | None = None,
                     sink: EventSink | None = None, timeout: float = 60.0) -> Path:
    """Fetch the CIFAR-10 python archive and write it as an image folder (PNG, lossless):
    ``<cache>/cifar10/{train,test}/<class>/NNNNN.png`` (50 000 / 10 000 images; ``val/`` is not
    written, the search holds its validation split out of ``train/``). A second call is a no-op.
    ``url``/``sha256`` default to the official archive and its checksum (a custom ``url`` without
    ``sha256`` is not verified)."""
    from edgenas.datasets.download import COMPLETE, download_archive

    if url is None:
        url, sha256 = CIFAR10_URL, sha256 or CIFAR10_SHA256
    cache = Path(cache_dir) if cache_dir is not None else None
    raw = download_archive(url, "cifar-10-python", sha256=sha256, cache_dir=cache, sink=sink, timeout=timeout)
    target = raw.parent / "cifar10"
    if (target / COMPLETE).is_file():
        return target
    batches = raw / "cifar-10-batches-py"
    try:
        meta = _unpickle(batches / "batches.meta")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"]]
        parts = {"train": [batches / f"data_batch_{i}" for i in range(1, 6)], "test": [batches / "test_batch"]}
        tmp = target.with_name(f".cifar10.{os.getpid()}.tmp")
        _write_pngs(parts, names, tmp, sink)
    except (KeyError, OSError, ValueError, pickle.UnpicklingError, EOFError) as e:
        raise DataError(f"{raw} is not the CIFAR-10 python archive: {type(e).__name__}: {e}") from None
    (tmp / COMPLETE).write_text(f"{url}\n")
    if target.exists():
        import shutil

        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def _unpickle(path: Path) -> dict[bytes, Any]:
    with path.open("rb") as f:
        return pickle.load(f, encoding="bytes")


def _write_pngs(parts: dict[str, list[Path]], names: list[str], out: Path, sink: EventSink | None) -> None:
    from PIL import Image

    for split, files in parts.items():
        count = Counter()
        for file in files:
            d = _unpickle(file)
            data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            labels = list(d[b"labels"])
            with progress(sink, f"cifar10 {split} images written", len(labels)) as tick:
                for img, label in zip(data, labels):
                    folder = out / split / names[label]
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(img, "RGB").save(folder / f"{count[label]:05d}.png")
                    count[label] += 1
                    tick()


__all__ = ["ImageDataset", "ImageItem", "check_image_file", "decode", "download_cifar10", "front_end_matrices",
           "held_out", "is_image_folder", "load_pixels", "open_image_folder", "resize_matrix", "transform"]
