"""Keyword spotting: 1 s audio clips → MFCC [1, frames, n_mfcc] → class.

Data configuration: :class:`edgenas.spec.DataConfig` (sample rate, n_mfcc, n_mels, window/hop).
Datasets: FSDD, Speech Commands, CSV manifests and the generated demo set
(:mod:`edgenas.datasets`), split by speaker. Front end on the board: the MFCC model of
:mod:`edgenas.export.frontend` before the int8 classifier. Augmentation: time shift and
SpecAugment-style masks on the MFCC, optional speed-perturbed copies of the training clips.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgenas.events import progress
from edgenas.spec import DataConfig
from edgenas.tasks.base import TASKS, Classification, Split

if TYPE_CHECKING:
    import torch


@TASKS.register("kws")
class KWSTask(Classification):
    name = "kws"
    summary = "keyword spotting: 1 s audio clips, MFCC front end (sample rate, n_mfcc, n_mels, window/hop searched)"
    data_config_class = DataConfig
    default_space = "kws-dscnn"
    input_kind = "audio clip (WAV)"
    val_split = "speaker-disjoint val split"
    memory_note = "the front end's float32 audio, spectrum and mel buffers; the int8 classifier's activations"
    norm_axes = (0, 1, 2)  # one mean/std per MFCC coefficient
    calibration_options = {"num_classes": 12}  # Speech Commands' 12-class setup

    def open_dataset(self, cfg: Any, *, sink: Callable[..., None], cache_dir: Any) -> Any:
        from edgenas.datasets.base import open_dataset

        return open_dataset(cfg.data or None, layout=cfg.layout, test_speakers=list(cfg.test_speakers) or None,
                            val_speakers=list(cfg.val_speakers) or None, seed=cfg.seed, sink=sink,
                            cache_dir=cache_dir)

    def dataset_info(self, ds: Any) -> dict[str, Any]:
        return {"name": ds.name, "root": ds.root, "classes": ds.classes, "native_rate": ds.native_rate,
                "synthetic": ds.synthetic, "fingerprint": ds.fingerprint(),
                "splits": {k: len(v) for k, v in ds.splits.items()},
                "speakers": {k: len({c.speaker for c in v}) for k, v in ds.splits.items()}}

    def describe_dataset(self, info: dict[str, Any]) -> str:
        return f"{info['splits']} clips, {len(info['classes'])} classes, speakers per split {info['speakers']}"

    def check_split(self, ds: Any, split: str, sink: Callable[..., None]) -> None:
        from edgenas.datasets.audio import check_audio_file

        # a set: Speech Commands' _silence_ clips share a few background-noise files
        paths = sorted({c.path for c in ds.splits[split] if c.path})
        with progress(sink, f"{split} audio files checked", len(paths)) as tick:
            for path in paths:
                check_audio_file(path)
                tick()

    def space_options(self, ds: Any) -> dict[str, Any]:
        return {"num_classes": len(ds.classes), "max_sample_rate": ds.native_rate}

    def load_split(self, ds: Any, split: str, data: Any, *, cache_dir: Any, sink: Callable[..., None],
                   variant: Any = None) -> Split:
        from edgenas.datasets.features import load_features

        fs = load_features(ds, split, data, cache_dir=cache_dir, sink=sink,
                           speed=1.0 if variant is None else float(variant))
        return Split(fs.x, fs.y)

    def raw_split(self, ds: Any, split: str, data: Any, *, cache_dir: Any,
                  sink: Callable[..., None] | None = None) -> np.ndarray:
        """[N, clip_samples] float32 waveforms at the configuration's sample rate."""
        from edgenas.datasets.features import split_waves

        return split_waves(ds, split, data)

    def frontend(self) -> Any:
        from edgenas.export.frontend import AudioFrontEnd

        return AudioFrontEnd()

    def train_variants(self, train_cfg: Any) -> tuple[Any, ...]:
        return tuple(train_cfg.speed_perturb)

    def augment(self, x: torch.Tensor, train_cfg: Any, gen: torch.Generator) -> torch.Tensor:
        """Random time shift (zero fill) and small time/frequency masks on MFCC batches."""
        import torch

        n, _, t, f = x.shape
        out = x.clone()
        if train_cfg.time_shift > 0:
            max_shift = max(1, int(t * train_cfg.time_shift))
            shifts = torch.randint(-max_shift, max_shift + 1, (n,), generator=gen)
            for i, s in enumerate(shifts.tolist()):
                if s > 0:
                    out[i, :, s:] = x[i, :, :-s]
                    out[i, :, :s] = 0
                elif s < 0:
                    out[i, :, :s] = x[i, :, -s:]
                    out[i, :, s:] = 0
        if train_cfg.spec_mask > 0:
            m = train_cfg.spec_mask
            for i in range(n):
                ft = int(torch.randint(0, m + 1, (1,), generator=gen))
                f0 = int(torch.randint(0, max(1, f - ft), (1,), generator=gen))
                out[i, :, :, f0:f0 + ft] = 0
                tt = int(torch.randint(0, m * 2 + 1, (1,), generator=gen))
                t0 = int(torch.randint(0, max(1, t - tt), (1,), generator=gen))
                out[i, :, t0:t0 + tt, :] = 0
        return out

    def example_input(self, data: Any, n: int = 2, seed: int = 0) -> np.ndarray:
        """MFCC of ``n`` clips of random noise (a real feature tensor, not random numbers)."""
        from edgenas.datasets.features import mfcc_numpy

        rng = np.random.default_rng(seed)
        waves = (0.1 * rng.standard_normal((n, data.clip_samples))).astype(np.float32)
        return np.stack([mfcc_numpy(w, data)[None] for w in waves]).astype(np.float32)

    def describe_data(self, data: Any) -> str:
        return (f"{data.sample_rate} Hz, {data.n_mfcc} MFCC of {data.n_mels} mel bands, window {data.win_ms:g} ms / "
                f"hop {data.hop_ms:g} ms (FFT {data.n_fft}), input {data.n_frames}×{data.n_mfcc}")
