"""Single-image super-resolution: an LR RGB frame → tiles → Y (or RGB) → ×scale → stitched HR frame.

Data configuration: :class:`~edgenas.tasks.sr_config.SRConfig` (scale, colour, tile, overlap,
frame; colour and tile searched). Datasets: HR image folders (:mod:`edgenas.datasets.sisr`:
Set5/Set14/BSD68 — train BSD68, val Set14, test Set5 — DIV2K, or train/ [val/] test/), the LR made
on the fly by antialiased bicubic downscaling. The splits as the model sees them:

* ``train``: random aligned patches (:data:`PATCH_LR` LR px, :data:`TRAIN_PATCHES` per image, each
  one of the 8 flips/rotations), seeded;
* ``val`` (drives the architecture and data logits): patches of the val images the same way,
  :data:`VAL_PATCHES` per image, another seed;
* ``test``: every tile of every test image as the board cuts it (``tile_in`` px with the overlap,
  edge-padded), the target NaN outside the tile's kept centre and in the ``scale`` px border
  (:func:`~edgenas.datasets.sisr.tile_targets`); ``groups`` = the image index. The test split is
  read only after the final training.

Metric: PSNR in dB on BT.601 Y (higher is better), the SR literature's: a patch's on the patch
shaved by ``scale`` px (search and training), a test image's on the whole stitched image
(:meth:`SRTask.score`: the non-NaN pixels of its tiles), averaged over images. Outputs are
clipped to [0, 1] first, as a saved image is. int8 fidelity: the PSNR drop against fp32 in dB.
Loss: L1 over the target's pixels (all channels of an RGB model).

Front end on the board: uint8 RGB tile → [0, 1] → Y (BT.601) or RGB (:mod:`edgenas.export.sr_frontend`),
once per tile, like the model; the bundle script cuts the tiles, stitches the output and (Y only)
upscales the chroma bicubic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgenas.errors import ConfigError
from edgenas.events import progress
from edgenas.tasks.base import TASKS, Metric, Split, Task
from edgenas.tasks.sr_config import SRConfig

if TYPE_CHECKING:
    import torch

PATCH_LR = 32  # LR side of a training / validation patch
TRAIN_PATCHES = 48  # per training image (BSD68: 3264 patches)
VAL_PATCHES = 16  # per validation image (Set14: 224)
VAL_SEED_OFFSET = 7919  # the val patches' seed: the run seed + this (not the train patches')
CALIBRATION_TILES = 64  # int8 calibration inputs: tiles cut from the training images
_Y = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)  # BT.601 studio swing on [0, 1] (datasets.sisr)


@dataclass(frozen=True)
class SRItem:
    path: str


@dataclass
class SRDataset:
    """HR images by split (files), decoded once on first use (uint8 RGB [H, W, 3])."""

    name: str
    root: str
    folders: dict[str, str]
    splits: dict[str, list[SRItem]]
    notes: list[str] = field(default_factory=list)
    seed: int = 0  # the patches' and the calibration tiles' seed
    classes: list[str] = field(default_factory=list)  # none: the bundle has no labels
    _images: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False)
    _cache: dict[tuple, Any] = field(default_factory=dict, repr=False)

    def images(self, split: str, sink: Callable[..., None] | None = None) -> list[np.ndarray]:
        from edgenas.datasets.sisr import load_hr_images

        if split not in self._images:
            self._images[split] = load_hr_images([it.path for it in self.splits[split]], notes=self.notes, sink=sink)
        return self._images[split]

    def fingerprint(self) -> str:
        from edgenas.datasets.base import split_fingerprint

        return split_fingerprint(f"sr\0{self.root}\0", [], self.splits, lambda it: f"{it.path}\n")


def _luma(t: "torch.Tensor") -> "torch.Tensor":
    """[B, C, H, W] → Y [B, H, W] (C = 3: BT.601; C = 1: itself)."""
    if t.shape[1] == 3:
        return (_Y[0] * t[:, 0] + _Y[1] * t[:, 1] + _Y[2] * t[:, 2]) + 16.0 / 255.0
    return t[:, 0]


def _luma_np(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.shape[1] == 3:
        return _Y[0] * a[:, 0] + _Y[1] * a[:, 1] + _Y[2] * a[:, 2] + 16.0 / 255.0
    return a[:, 0]


def _psnr_db(mse: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))


@TASKS.register("sr")
class SRTask(Task):
    name = "sr"
    summary = "single-image super-resolution: HR image folders, bicubic LR, tiled frames (colour and tile searched)"
    data_config_class = SRConfig
    default_space = "sr-dlsr"
    metric = Metric("psnr", higher_is_better=True, fidelity="PSNR drop vs fp32 (dB)", unit="dB",
                    raw_input_tolerance=0.5)
    input_kind = "image (PNG/JPEG), upscaled to a PNG"
    val_split = "val split (patches of the val images)"
    memory_note = "the front end's float32 tile; the int8 network's activations for one tile, as tiles run one at a time"
    calibration_options = {}
    # pixel values in, no label smoothing; the search as the image task runs it (single-path Gumbel,
    # the latency budget as a target, the derived spec grown into the budget left unused): with the
    # one-sided hinge a first x2 run on litert-cpu settled on an 840-parameter network at 31 ms of
    # a 200 ms frame budget
    config_defaults: dict[str, Any] = {"train.normalize": False, "train.label_smoothing": 0.0,
                                       "search.strategy": "gumbel-hard", "search.epochs": 10,
                                       "search.latency_target": True, "search.fill_budget": True}

    # ---- data ----------------------------------------------------------------------------
    def open_dataset(self, cfg: Any, *, sink: Callable[..., None], cache_dir: Any) -> Any:
        from pathlib import Path

        from edgenas.datasets.sisr import resolve_splits, split_images

        if not cfg.data:
            raise ConfigError("--task sr needs --data: a folder of HR images (Set5/ Set14/ BSD68/, DIV2K_train_HR/ + "
                              "DIV2K_valid_HR/, or train/ [val/] test/), e.g. ../shared/data/sisr")
        folders = resolve_splits(cfg.data)
        files = split_images(folders, seed=cfg.seed)
        root = Path(cfg.data).expanduser().resolve()
        return SRDataset(name=root.name, root=str(root), folders={k: str(v) for k, v in folders.items()},
                         splits={k: [SRItem(str(p)) for p in v] for k, v in files.items()}, seed=cfg.seed)

    def dataset_info(self, ds: Any) -> dict[str, Any]:
        return {"name": ds.name, "root": ds.root, "classes": [], "folders": ds.folders,
                "fingerprint": ds.fingerprint(), "splits": {k: len(v) for k, v in ds.splits.items()},
                "notes": list(ds.notes)}

    def describe_dataset(self, info: dict[str, Any]) -> str:
        from pathlib import Path

        f = {k: Path(v).name for k, v in info["folders"].items()}
        notes = f"; {'; '.join(info['notes'])}" if info.get("notes") else ""
        return (f"HR images: train {f['train']} ({info['splits']['train']}), val {f['val']} "
                f"({info['splits']['val']}), test {f['test']} ({info['splits']['test']}){notes}")

    def check_split(self, ds: Any, split: str, sink: Callable[..., None]) -> None:
        from edgenas.datasets.sisr import read_hr

        with progress(sink, f"{split} images checked", len(ds.splits[split])) as tick:
            for it in ds.splits[split]:
                read_hr(it.path)
                tick()

    def space_options(self, ds: Any) -> dict[str, Any]:
        return {}

    def load_split(self, ds: Any, split: str, data: Any, *, cache_dir: Any, sink: Callable[..., None],
                   variant: Any = None) -> Split:
        from edgenas.datasets.sisr import lr_hr_pair, sample_patches, tile_inputs, tile_targets, to_chw_float

        if split in ("train", "val"):  # patches: independent of the tile
            key = (split, data.scale, data.colour)
            if key not in ds._cache:
                imgs = [to_chw_float(im) for im in ds.images(split, sink)]
                names = [it.path.rsplit("/", 1)[-1] for it in ds.splits[split]]
                seed = ds.seed + (VAL_SEED_OFFSET if split == "val" else 0)
                lr, hr = sample_patches(imgs, data.scale, PATCH_LR, TRAIN_PATCHES if split == "train" else VAL_PATCHES,
                                        seed, data.colour, notes=ds.notes, names=names)
                ds._cache[key] = Split(lr, hr)
            return ds._cache[key]
        key = (split, data.key())
        if key not in ds._cache:
            xs, ys, gs = [], [], []
            for k, im in enumerate(ds.images(split, sink)):
                lr, hr = lr_hr_pair(im, data.scale, data.colour)
                xs.append(tile_inputs(lr, data.tile, data.overlap)[0])
                ys.append(tile_targets(hr, data.tile, data.overlap, data.scale, data.scale))
                gs.append(np.full(len(xs[-1]), k, dtype=np.int64))
            ds._cache[key] = Split(np.concatenate(xs).astype(np.float32), np.concatenate(ys), np.concatenate(gs))
        return ds._cache[key]

    def raw_split(self, ds: Any, split: str, data: Any, *, cache_dir: Any,
                  sink: Callable[..., None] | None = None) -> np.ndarray:
        """The test tiles as the board cuts them: uint8 RGB [N, tile_in, tile_in, 3] of the LR image."""
        from edgenas.datasets.sisr import lr_hr_pair, tile_inputs, to_uint8_hwc

        out = []
        for im in ds.images(split, sink):
            lr = lr_hr_pair(im, data.scale, "rgb")[0]
            tiles = tile_inputs(lr, data.tile, data.overlap)[0]
            out.append(np.stack([to_uint8_hwc(t) for t in tiles]))
        return np.concatenate(out)

    def bundle_sample(self, ds: Any, dest: Any, data: Any = None) -> Any:
        """The first test image as the board gets it: its LR version (×``data.scale`` bicubic
        down, as the test split is made), ``sample.png`` in ``dest``; the HR file without ``data``."""
        from pathlib import Path

        if data is None or not ds.splits["test"]:
            return super().bundle_sample(ds, dest, data)
        from PIL import Image

        from edgenas.datasets.sisr import lr_hr_pair, to_uint8_hwc

        path = Path(dest) / "sample.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(to_uint8_hwc(lr_hr_pair(ds.images("test")[0], data.scale, "rgb")[0])).save(path)
        return path

    def calibration_inputs(self, ds: Any, data: Any, *, cache_dir: Any, sink: Callable[..., None]) -> np.ndarray:
        """Tiles of the board's input shape cut from the training images (seeded)."""
        from edgenas.datasets.sisr import lr_hr_pair, tile_inputs

        rng = np.random.default_rng(ds.seed)
        imgs = ds.images("train", sink)
        tiles = []
        for k in rng.permutation(len(imgs)):
            lr = lr_hr_pair(imgs[k], data.scale, data.colour)[0]
            tiles.extend(tile_inputs(lr, data.tile, data.overlap)[0])
            if len(tiles) >= 4 * CALIBRATION_TILES:
                break
        pick = rng.permutation(len(tiles))[:CALIBRATION_TILES]
        return np.stack([tiles[i] for i in pick]).astype(np.float32)

    def frontend(self) -> Any:
        from edgenas.export.sr_frontend import SRFrontEnd

        return SRFrontEnd()

    def norm_stats(self, x: np.ndarray, data: Any = None) -> tuple[np.ndarray, np.ndarray] | None:
        """None: the model takes pixel values in [0, 1] (its bicubic residual needs them raw)."""
        return None

    def example_input(self, data: Any, n: int = 2, seed: int = 0) -> np.ndarray:
        """``n`` smooth random tiles in [0, 1] of the board's input shape."""
        rng = np.random.default_rng(seed)
        c, t, _ = data.input_shape
        base = rng.random((n, c, t // 8 + 1, t // 8 + 1))
        return np.clip(np.kron(base, np.ones((1, 1, 8, 8)))[:, :, :t, :t], 0, 1).astype(np.float32)

    def example_target(self, data: Any, n: int = 2, seed: int = 0) -> np.ndarray:
        """HR targets of the model's output shape: the bicubic upscaling of :meth:`example_input`."""
        from edgenas.datasets.sisr import bicubic_up

        return np.stack([bicubic_up(x, data.scale) for x in self.example_input(data, n, seed)]).astype(np.float32)

    def describe_data(self, data: Any) -> str:
        return (f"×{data.scale}, {'Y only (chroma bicubic)' if data.colour == 'y' else 'RGB'}, tiles of {data.tile} px "
                f"(+{data.overlap} overlap: {data.tile_in}×{data.tile_in} in), {data.tiles_per_frame} per "
                f"{data.frame_w}×{data.frame_h} frame")

    # ---- objective -----------------------------------------------------------------------
    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """L1 over the target's pixels (NaN ones, outside a test tile's kept centre, left out)."""
        import torch

        valid = ~torch.isnan(y)
        if bool(valid.all()):
            return (out - y).abs().mean()
        return (out - y.nan_to_num()).abs()[valid].mean()

    def hits(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The sum of the per-example PSNR (dB, Y, output clipped to [0, 1]) over the target's non-NaN
        pixels. A patch is scored whole (the search and training monitor; the ``scale`` px border
        the literature shaves is NaN in the test targets, which :meth:`score` scores)."""
        import torch

        a, b = _luma(out.clamp(0, 1)), _luma(y)
        valid = ~torch.isnan(b)
        err = torch.where(valid, (a - b.nan_to_num()) ** 2, torch.zeros_like(a))
        mse = err.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
        return (10.0 * torch.log10(1.0 / mse.clamp(min=1e-10))).sum()

    def score(self, out: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> float:
        """Mean PSNR (dB) of the items: each group (a test image's tiles) over its non-NaN target
        pixels; without groups, per example as :meth:`hits`."""
        if len(y) == 0:
            return float("nan")
        if groups is None:
            return super().score(out, y)
        a, b = _luma_np(np.clip(out, 0, 1)), _luma_np(y)
        err = np.where(np.isnan(b), 0.0, (a - np.nan_to_num(b)) ** 2)
        n = (~np.isnan(b)).reshape(len(b), -1).sum(1)
        per = err.reshape(len(b), -1).sum(1)
        g = np.asarray(groups)
        ids = np.unique(g)
        mse = np.array([per[g == i].sum() / max(1, n[g == i].sum()) for i in ids])
        return float(_psnr_db(mse).mean())

    def fidelity(self, out: np.ndarray, ref: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> float:
        """The PSNR drop (dB) of ``out`` against the fp32 PyTorch outputs ``ref``, both scored on ``y``."""
        return self.score(ref, y, groups) - self.score(out, y, groups)
