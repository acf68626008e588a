"""Single-image super-resolution data: HR image folders, bicubic LR made on the fly, BT.601 colour,
PSNR/SSIM as the SR literature scores them, training patches and tiled inference.

Conventions (every function below):

- Images are numpy arrays. Files decode to uint8 RGB ``[H, W, 3]`` (:func:`read_hr`); the model
  side uses float32 ``[C, H, W]`` with values in [0, 1] (:func:`to_chw_float`), C = 3 (RGB) or
  1 (Y). Colour functions also take a batch ``[..., 3, H, W]``.
- LR images are made from HR ones: :func:`mod_crop` crops the HR image (top-left anchored) to a
  multiple of the scale, :func:`bicubic_down` resizes it with antialiased bicubic to exactly
  ``H/scale × W/scale`` and quantises it to 8 bits (the LR image is an 8-bit image, as a camera
  frame is). :func:`bicubic_up` is the "bicubic" baseline, clipped to [0, 1], not quantised.
  Both are ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False,
  antialias=True)``: the Keys kernel with a = −0.5, as MATLAB's ``imresize`` and Pillow's
  ``BICUBIC`` (equal to Pillow's float resize to ~1e-7). Upsampling uses it too: PyTorch's plain
  bicubic (``antialias=False``) is a = −0.75 (OpenCV's, ONNX ``Resize``'s default), which scores
  the bicubic baseline on Set5 ×2 0.3 dB above the literature's 33.66 dB; a = −0.5 is within
  0.03 dB at ×2, ×3 and ×4.
- Colour is ITU-R BT.601 studio swing, as MATLAB's ``rgb2ycbcr`` on [0, 1] images (Y in
  [16, 235]/255). With colour ``"y"`` both images of a pair are the Y of their RGB image: the LR
  is made from the RGB HR first (as a camera gives an RGB frame), then both are converted.
- :func:`psnr` / :func:`ssim` score the Y channel (a 3-channel input is converted, a 1-channel
  one is taken as Y) with ``shave`` pixels removed on every side, data range 1, in float64, on
  the values given (no 8-bit rounding: round with :func:`to_uint8_hwc` first to score saved
  images). SSIM is Wang et al. 2004 with an 11×11 Gaussian window (σ = 1.5), K1 = 0.01,
  K2 = 0.03 and 'valid' filtering, as BasicSR's ``calculate_ssim``. Identical images: PSNR
  ``inf``, SSIM 1.0.
- Tiles (:func:`tile_grid`, :func:`run_tiled`) follow :class:`~edgenas.tasks.sr_config.SRConfig`:
  tiles of ``tile`` LR pixels on a stride of ``tile`` from the top-left corner, each run with
  ``overlap`` pixels of context on every side (edge-padded past the image), the central
  ``tile·scale`` output pixels kept.

Splits (:func:`resolve_splits`, then :func:`split_images` for the files), three layouts, detected
in this order:

    root/train/ [val/] [test/]                train train/; test test/ (or val/ when there is no
                                              test/); val val/ beside test/, else held out of train/
    root/DIV2K_train_HR/ DIV2K_valid_HR/      train DIV2K_train_HR, val held out of it, test DIV2K_valid_HR
    root/Set5/ Set14/ BSD68/                  train BSD68, val Set14, test Set5

``train=``, ``val=``, ``test=`` override a split with a subfolder of ``root`` or an absolute path
(with all three given, any ``root`` will do). A val folder that is the train folder means "hold out a
seeded ``val_fraction`` of its images (by file name)". The test folder may be neither the
train nor the val folder: the test split is never read during the search.

Errors a user can cause are one-line :class:`DataError`\\ s naming the file or folder (an
undecodable image, a missing folder, an unknown layout, an image too small for the patches of
every image). What is handled is said in ``notes`` (one line each): grey, palette, alpha and
16-bit images become 8-bit RGB; an image whose LR is smaller than a patch is skipped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from edgenas.datasets.base import hash_rank, held_out_count
from edgenas.errors import DataError
from edgenas.events import EventSink, progress

HR_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
SPLIT_NAMES = ("train", "val", "test")
SHARED_LAYOUT = {"train": "BSD68", "val": "Set14", "test": "Set5"}
DIV2K_TRAIN, DIV2K_VALID = "DIV2K_train_HR", "DIV2K_valid_HR"

# BT.601 studio swing on [0, 1] RGB (MATLAB rgb2ycbcr): ycbcr = (OFFSET + MATRIX @ rgb) / 255
YCBCR_MATRIX = np.array([[65.481, 128.553, 24.966],
                         [-37.797, -74.203, 112.0],
                         [112.0, -93.786, -18.214]], dtype=np.float64)
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)
_YCBCR_INVERSE = np.linalg.inv(YCBCR_MATRIX)

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


# ---- files and splits --------------------------------------------------------------------
def list_images(folder: str | Path) -> list[Path]:
    """The image files of ``folder`` (extensions :data:`HR_EXTS`, hidden files skipped), sorted
    by name. A missing folder, or one without images, is a DataError naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist or is not a folder")
    out = sorted(p for p in folder.iterdir()
                 if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in HR_EXTS)
    if not out:
        raise DataError(f"image folder {folder} has no images ({', '.join(HR_EXTS)})")
    return out


def read_hr(path: str | Path, notes: list[str] | None = None) -> np.ndarray:
    """One image as uint8 RGB [H, W, 3]. Grey, bilevel, palette, alpha (dropped) and 16-bit
    (scaled to 8 bits) images are converted, with a note such as ``"bridge.png: grey, used as
    RGB"`` appended to ``notes``. A file Pillow cannot decode is a DataError naming it."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            arr, what = _to_rgb(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from None
    if what and notes is not None:
        notes.append(f"{path.name}: {what}, used as RGB")
    return arr


def _to_rgb(im: Image.Image) -> tuple[np.ndarray, str]:
    """(uint8 [H, W, 3], what was converted or "")."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy(), ""
    if mode.startswith("I"):  # I;16, I;16B, … and I: 16-bit grey
        grey = np.asarray(im).astype(np.float64)
        u8 = np.clip(np.round(grey / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(u8[..., None], 3, axis=2), "16-bit grey"
    what = {"L": "grey", "1": "bilevel", "P": "palette", "PA": "palette with alpha (dropped)",
            "RGBA": "alpha dropped", "RGBa": "alpha dropped", "LA": "grey with alpha (dropped)",
            "La": "grey with alpha (dropped)"}.get(mode, f"mode {mode}")
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy(), what


def load_hr_images(paths: Sequence[str | Path], *, notes: list[str] | None = None,
                   sink: EventSink | None = None) -> list[np.ndarray]:
    """:func:`read_hr` of every path (progress events on ``sink``)."""
    out = []
    with progress(sink, "HR images decoded", len(paths)) as tick:
        for p in paths:
            out.append(read_hr(p, notes))
            tick()
    return out


def _folder(root: Path, name: str | Path) -> Path:
    p = Path(name).expanduser()
    return (p if p.is_absolute() else root / p).resolve()


def resolve_splits(root: str | Path, train: str | Path | None = None, val: str | Path | None = None,
                   test: str | Path | None = None) -> dict[str, Path]:
    """The folder of each split, ``{"train", "val", "test"} → Path`` (layouts and overrides in the
    module doc). ``val`` equal to ``train`` means a held-out part of it (:func:`split_images`)."""
    root = Path(root).expanduser().resolve()
    given = {"train": train, "val": val, "test": test}
    if all(v is not None for v in given.values()):
        defaults: dict[str, Path] = {}
    else:
        if not root.is_dir():
            raise DataError(f"SR dataset path {root} does not exist or is not a folder")
        defaults = _layout_defaults(root)
    splits = {s: _folder(root, given[s]) if given[s] is not None else defaults[s] for s in SPLIT_NAMES}
    for s in SPLIT_NAMES:
        if not splits[s].is_dir():
            raise DataError(f"the {s} folder {splits[s]} does not exist or is not a folder")
    for s in ("train", "val"):
        if splits["test"] == splits[s]:
            raise DataError(f"the test folder {splits['test']} is also the {s} folder; the test split is never "
                            "read during the search, so it must be another folder")
    return splits


def _layout_defaults(root: Path) -> dict[str, Path]:
    has = lambda name: (root / name).is_dir()  # noqa: E731
    if has("train"):
        test = "test" if has("test") else "val" if has("val") else None
        if test is None:
            raise DataError(f"{root} has train/ but neither test/ nor val/: one of them is the test split")
        val = "val" if test == "test" and has("val") else "train"
        return {"train": root / "train", "val": root / val, "test": root / test}
    if has(DIV2K_TRAIN):
        if not has(DIV2K_VALID):
            raise DataError(f"{root} has {DIV2K_TRAIN}/ but not {DIV2K_VALID}/ (the test split of the DIV2K layout)")
        return {"train": root / DIV2K_TRAIN, "val": root / DIV2K_TRAIN, "test": root / DIV2K_VALID}
    if any(has(name) for name in SHARED_LAYOUT.values()):
        missing = [name for name in SHARED_LAYOUT.values() if not has(name)]
        if missing:
            raise DataError(f"{root} lacks {', '.join(m + '/' for m in missing)} of the Set5/Set14/BSD68 layout "
                            "(train BSD68, val Set14, test Set5); name the splits with train=, val=, test=")
        return {s: root / name for s, name in SHARED_LAYOUT.items()}
    raise DataError(f"cannot detect the SR dataset layout of {root}: expected Set5/ Set14/ BSD68/, "
                    f"{DIV2K_TRAIN}/ + {DIV2K_VALID}/, or train/ + test/ (optional val/) folders of HR images, "
                    "or all three splits named (train=, val=, test=)")


def split_images(splits: dict[str, Path], val_fraction: float = 0.1, seed: int = 0) -> dict[str, list[Path]]:
    """The image files of each split of :func:`resolve_splits`. When the val folder is the train
    folder, val is ``round(val_fraction · n)`` of its images (at least 1, chosen by hashing the seed
    and the file name) and train the rest; the train folder then needs two images or more."""
    if not 0 < val_fraction < 1:
        raise DataError(f"the held-out fraction of the train folder must be in (0, 1), got {val_fraction}")
    out = {s: list_images(splits[s]) for s in SPLIT_NAMES}
    if Path(splits["val"]).resolve() == Path(splits["train"]).resolve():
        files = out["train"]
        if len(files) < 2:
            raise DataError(f"the train folder {splits['train']} has 1 image; the val split is held out of it, "
                            "so it needs at least 2 (or give a val folder)")
        ranked = hash_rank([p.name for p in files], seed)
        held = set(ranked[:held_out_count(len(files), val_fraction)])
        out["val"] = [p for i, p in enumerate(files) if i in held]
        out["train"] = [p for i, p in enumerate(files) if i not in held]
    return out


# ---- pixels ------------------------------------------------------------------------------
def mod_crop(img_hwc: np.ndarray, scale: int) -> np.ndarray:
    """``img_hwc`` ([H, W] or [H, W, C]) cropped to H and W multiples of ``scale`` (top-left kept)."""
    h, w = img_hwc.shape[:2]
    return img_hwc[:h - h % scale, :w - w % scale]


def to_chw_float(img_uint8_hwc: np.ndarray) -> np.ndarray:
    """uint8 [H, W, C] → float32 [C, H, W] in [0, 1] (value / 255)."""
    return np.ascontiguousarray(img_uint8_hwc.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def to_uint8_hwc(img: np.ndarray) -> np.ndarray:
    """float [C, H, W] in [0, 1] → uint8 [H, W, C], rounded to the nearest step and clipped."""
    return np.ascontiguousarray(np.clip(np.round(np.asarray(img, dtype=np.float64) * 255.0), 0, 255)
                                .astype(np.uint8).transpose(1, 2, 0))


def _resize(chw: np.ndarray, size: tuple[int, int], antialias: bool) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32))[None]
    with torch.no_grad():
        y = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=antialias)
    return y[0].numpy()


def bicubic_down(hr_chw: np.ndarray, scale: int) -> np.ndarray:
    """The LR image of ``hr_chw`` (float [C, H, W], H and W multiples of ``scale``): antialiased
    bicubic to [C, H/scale, W/scale], clipped to [0, 1] and quantised to steps of 1/255."""
    c, h, w = hr_chw.shape
    if h % scale or w % scale:
        raise ValueError(f"HR image of {h}x{w} px is not a multiple of the scale {scale}; mod_crop it first")
    lr = _resize(hr_chw, (h // scale, w // scale), antialias=True)
    return (np.round(np.clip(lr, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def bicubic_up(lr_chw: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: ``lr_chw`` [C, h, w] upsampled to [C, h·scale, w·scale] with the
    a = −0.5 bicubic kernel (module doc), clipped to [0, 1]."""
    _, h, w = lr_chw.shape
    return np.clip(_resize(lr_chw, (h * scale, w * scale), antialias=True), 0.0, 1.0)


def rgb_to_ycbcr(chw: np.ndarray) -> np.ndarray:
    """RGB [..., 3, H, W] in [0, 1] → BT.601 YCbCr [..., 3, H, W] (module doc), float32 for
    float32 input (float64 for float64)."""
    x = np.asarray(chw)
    out = np.einsum("ij,...jhw->...ihw", YCBCR_MATRIX, x.astype(np.float64)) + YCBCR_OFFSET[:, None, None]
    return (out / 255.0).astype(np.result_type(x.dtype, np.float32))


def ycbcr_to_rgb(chw: np.ndarray) -> np.ndarray:
    """The exact inverse of :func:`rgb_to_ycbcr` (not clipped)."""
    x = np.asarray(chw)
    centred = x.astype(np.float64) * 255.0 - YCBCR_OFFSET[:, None, None]
    return np.einsum("ij,...jhw->...ihw", _YCBCR_INVERSE, centred).astype(np.result_type(x.dtype, np.float32))


def rgb_to_y(chw: np.ndarray) -> np.ndarray:
    """RGB [..., 3, H, W] → BT.601 Y [..., 1, H, W]."""
    x = np.asarray(chw)
    y = (np.einsum("j,...jhw->...hw", YCBCR_MATRIX[0], x.astype(np.float64)) + YCBCR_OFFSET[0]) / 255.0
    return y[..., None, :, :].astype(np.result_type(x.dtype, np.float32))


# ---- metrics -----------------------------------------------------------------------------
def _y64(img: np.ndarray, shave: int) -> np.ndarray:
    x = np.asarray(img)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected an image [3, H, W] (RGB) or [1, H, W] / [H, W] (Y), got shape {x.shape}")
    y = (rgb_to_y(x.astype(np.float64)) if x.shape[0] == 3 else x.astype(np.float64))[0]
    if shave < 0:
        raise ValueError(f"shave must be >= 0, got {shave}")
    if shave:
        if min(y.shape) <= 2 * shave:
            raise DataError(f"an image of {y.shape[0]}x{y.shape[1]} px has nothing left after shaving {shave} px")
        y = y[shave:-shave, shave:-shave]
    return y


def _pair(sr: np.ndarray, hr: np.ndarray, shave: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = _y64(sr, shave), _y64(hr, shave)
    if a.shape != b.shape:
        raise ValueError(f"SR and HR images differ in size: {a.shape} vs {b.shape} (after shaving)")
    return a, b


def psnr(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """PSNR in dB of ``sr`` against ``hr`` on Y, ``shave`` px shaved, data range 1 (``inf`` when equal)."""
    a, b = _pair(sr, hr, shave)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def _gaussian() -> np.ndarray:
    x = np.arange(SSIM_WINDOW, dtype=np.float64) - (SSIM_WINDOW - 1) / 2
    g = np.exp(-x ** 2 / (2 * SSIM_SIGMA ** 2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D array with the window ``outer(g, g)``."""
    k = len(g)
    x = np.lib.stride_tricks.sliding_window_view(x, k, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(x, k, axis=1) @ g


def ssim(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """Mean SSIM of ``sr`` against ``hr`` on Y, ``shave`` px shaved (module doc)."""
    a, b = _pair(sr, hr, shave)
    if min(a.shape) < SSIM_WINDOW:
        raise DataError(f"an image of {a.shape[0]}x{a.shape[1]} px (after shaving {shave} px) is smaller than the "
                        f"{SSIM_WINDOW}x{SSIM_WINDOW} SSIM window")
    g = _gaussian()
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = _filter_valid(a * a, g) - mu_aa
    var_b = _filter_valid(b * b, g) - mu_bb
    cov = _filter_valid(a * b, g) - mu_ab
    smap = ((2 * mu_ab + c1) * (2 * cov + c2)) / ((mu_aa + mu_bb + c1) * (var_a + var_b + c2))
    return float(smap.mean())


# ---- pairs and patches -------------------------------------------------------------------
def dihedral(x: np.ndarray, t: int) -> np.ndarray:
    """One of the 8 flips/rotations of the last two axes: ``t & 4`` flips left-right first, then
    ``t & 3`` quarter turns counter-clockwise (``np.rot90``). ``t = 0`` is the identity."""
    if t & 4:
        x = x[..., ::-1]
    return np.ascontiguousarray(np.rot90(x, t & 3, axes=(-2, -1)))


def _colour(img: np.ndarray, colour: str) -> np.ndarray:
    if colour == "y":
        return rgb_to_y(img)
    if colour == "rgb":
        return img
    raise ValueError(f"colour must be 'y' or 'rgb', got {colour!r}")


def lr_hr_pair(hr_uint8_hwc: np.ndarray, scale: int, colour: str) -> tuple[np.ndarray, np.ndarray]:
    """(LR [C, H/s, W/s], HR [C, H, W]) float32 of one whole HR image for evaluation: mod-cropped,
    LR by :func:`bicubic_down` of the RGB HR, then both in ``colour`` ("y": C = 1, "rgb": C = 3)."""
    hr = to_chw_float(mod_crop(hr_uint8_hwc, scale))
    lr = bicubic_down(hr, scale)
    return _colour(lr, colour), _colour(hr, colour)


def sample_patches(images_chw: list[np.ndarray], scale: int, patch_lr: int, per_image: int, seed: int,
                   colour: str, notes: list[str] | None = None,
                   names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random aligned training pairs (LR [N, C, p, p], HR [N, C, p·s, p·s]) float32, N = ``per_image``
    × the images used, in image order. Each RGB HR image [3, H, W] is mod-cropped and its LR made
    once (:func:`bicubic_down`), both converted to ``colour``; then each patch takes a random LR
    top-left (i, j), the HR square at (i·s, j·s) and one random :func:`dihedral` transform applied
    to both. Seeded (``numpy.random.default_rng(seed)``): the same arguments give the same
    patches. An image whose LR is smaller than ``patch_lr`` is skipped with a note (``names``
    name the images in notes, else their index); when every image is, a DataError."""
    if patch_lr < 1 or per_image < 1:
        raise ValueError(f"need patch_lr >= 1 and per_image >= 1, got {patch_lr}, {per_image}")
    rng = np.random.default_rng(seed)
    lrs, hrs, largest = [], [], (0, 0)
    p, s = patch_lr, scale
    for k, img in enumerate(images_chw):
        if img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"expected RGB HR images [3, H, W], got shape {img.shape}")
        hr = np.ascontiguousarray(img[:, :img.shape[1] - img.shape[1] % s, :img.shape[2] - img.shape[2] % s],
                                  dtype=np.float32)
        h, w = hr.shape[1] // s, hr.shape[2] // s
        largest = max(largest, (h, w), key=lambda hw: min(hw))
        if h < p or w < p:
            if notes is not None:
                name = names[k] if names is not None else f"image {k}"
                notes.append(f"{name}: its x{s} LR image of {w}x{h} px is smaller than the {p} px patch, skipped")
            continue
        lr = _colour(bicubic_down(hr, s), colour)
        hr = _colour(hr, colour)
        for _ in range(per_image):
            i, j, t = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1)), int(rng.integers(0, 8))
            lrs.append(dihedral(lr[:, i:i + p, j:j + p], t))
            hrs.append(dihedral(hr[:, i * s:(i + p) * s, j * s:(j + p) * s], t))
    if not lrs:
        raise DataError(f"no image is large enough for {p} px LR patches at x{s} (of {len(images_chw)} images, "
                        f"the largest LR is {largest[1]}x{largest[0]} px)")
    return np.stack(lrs).astype(np.float32), np.stack(hrs).astype(np.float32)


# ---- tiled inference ---------------------------------------------------------------------
def tile_grid(h: int, w: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """The LR origins (y0, x0) of the tiles covering an h × w LR image, row by row on a stride of
    ``tile``: ceil(h/tile)·ceil(w/tile) tiles (:attr:`SRConfig.tiles_per_frame`). Tile (y0, x0)
    runs on LR rows y0 − overlap … y0 + tile + overlap (the origins themselves do not depend on
    ``overlap``)."""
    if tile < 1 or overlap < 0 or h < 1 or w < 1:
        raise ValueError(f"invalid tiling: image {h}x{w}, tile {tile}, overlap {overlap}")
    return [(y, x) for y in range(0, h, tile) for x in range(0, w, tile)]


def tile_inputs(lr_chw: np.ndarray, tile: int, overlap: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The model inputs of a whole LR image [C, h, w]: (tiles [n, C, t, t], their LR origins), t =
    tile + 2·overlap, in :func:`tile_grid` order, cut from the image edge-padded by ``overlap`` on
    every side (and to whole tiles at the bottom and right), as the board cuts them."""
    c, h, w = lr_chw.shape
    origins = tile_grid(h, w, tile, overlap)
    rows, cols = math.ceil(h / tile), math.ceil(w / tile)
    o, t = overlap, tile + 2 * overlap
    padded = np.pad(np.asarray(lr_chw), ((0, 0), (o, o + rows * tile - h), (o, o + cols * tile - w)), mode="edge")
    return np.stack([padded[:, y:y + t, x:x + t] for y, x in origins]), origins


def tile_targets(hr_chw: np.ndarray, tile: int, overlap: int, scale: int, shave: int) -> np.ndarray:
    """The HR target of every tile of :func:`tile_inputs` ([n, C, t·s, t·s] float32): the HR pixels
    that tile's kept centre covers, NaN elsewhere (the overlap, past the image, and ``shave`` px
    at the image border), so a metric over the non-NaN pixels of all tiles of an image is the
    metric of the stitched image."""
    c, hh, ww = hr_chw.shape
    s, o, t = scale, overlap, tile + 2 * overlap
    h, w = hh // s, ww // s
    origins = tile_grid(h, w, tile, overlap)
    rows, cols = math.ceil(h / tile), math.ceil(w / tile)
    canvas = np.full((c, rows * tile * s, cols * tile * s), np.nan, dtype=np.float32)
    canvas[:, :hh, :ww] = hr_chw
    if shave:
        canvas[:, :shave], canvas[:, hh - shave:hh] = np.nan, np.nan
        canvas[:, :, :shave], canvas[:, :, ww - shave:ww] = np.nan, np.nan
    out = np.full((len(origins), c, t * s, t * s), np.nan, dtype=np.float32)
    for k, (y, x) in enumerate(origins):
        out[k, :, o * s:(o + tile) * s, o * s:(o + tile) * s] = canvas[:, y * s:(y + tile) * s, x * s:(x + tile) * s]
    return out


def run_tiled(fn: Callable[[np.ndarray], np.ndarray], lr_chw: np.ndarray, tile: int, overlap: int, scale: int,
              batch: int = 16) -> np.ndarray:
    """Upscale a whole LR image [C, h, w] with a fixed-shape model ``fn``: [B, C, t, t] float32 →
    [B, C', t·scale, t·scale] (t = tile + 2·overlap), run on the tiles of :func:`tile_inputs` (at
    most ``batch`` at a time); the central tile·scale square of each output is kept and the
    stitched result cropped to [C', h·scale, w·scale]."""
    c, h, w = lr_chw.shape
    tiles, origins = tile_inputs(np.asarray(lr_chw, dtype=np.float32), tile, overlap)
    rows, cols = math.ceil(h / tile), math.ceil(w / tile)
    o, t, s = overlap, tile + 2 * overlap, scale
    canvas: np.ndarray | None = None
    for start in range(0, len(origins), batch):
        part = origins[start:start + batch]
        out = np.asarray(fn(tiles[start:start + batch]))
        if out.ndim != 4 or out.shape[0] != len(part) or out.shape[2:] != (t * s, t * s):
            raise ValueError(f"the tile model returned shape {out.shape} for {len(part)} tiles of {t}x{t} px; "
                             f"expected [{len(part)}, C, {t * s}, {t * s}]")
        if canvas is None:
            canvas = np.empty((out.shape[1], rows * tile * s, cols * tile * s), dtype=np.float32)
        for (y, x), tile_out in zip(part, out):
            canvas[:, y * s:(y + tile) * s, x * s:(x + tile) * s] = tile_out[:, o * s:(o + tile) * s,
                                                                             o * s:(o + tile) * s]
    assert canvas is not None  # tile_grid gives at least one tile
    return canvas[:, :h * s, :w * s]


__all__ = ["HR_EXTS", "bicubic_down", "bicubic_up", "dihedral", "list_images", "load_hr_images", "lr_hr_pair",
           "mod_crop", "psnr", "read_hr", "resolve_splits", "rgb_to_y", "rgb_to_ycbcr", "run_tiled",
           "sample_patches", "split_images", "ssim", "tile_grid", "tile_inputs", "tile_targets", "to_chw_float", "to_uint8_hwc",
           "ycbcr_to_rgb"]
