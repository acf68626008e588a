"""Dataset loaders, the audio front end (MFCC) and the feature cache.

``open_dataset(path)`` auto-detects FSDD, CSV-manifest and Speech Commands layouts;
``open_dataset(None)`` gives the synthetic keyword-spotting demo set (generated offline with
espeak-ng and cached). ``load_features(ds, split, cfg, cache_dir)`` turns a split into cached
MFCC tensors for one :class:`~edgenas.spec.DataConfig`.
"""

from edgenas.datasets.audio import fit_length, load_audio
from edgenas.datasets.base import (
    DATASETS,
    AudioDataset,
    Clip,
    default_cache_dir,
    detect_layout,
    open_dataset,
)
from edgenas.datasets import fsdd as _fsdd  # noqa: F401  (registers "fsdd")
from edgenas.datasets import manifest as _manifest  # noqa: F401  (registers "csv")
from edgenas.datasets import speech_commands as _speech_commands  # noqa: F401  (registers "speech_commands")
from edgenas.datasets import synthetic as _synthetic  # noqa: F401  (registers "synthetic")
from edgenas.datasets.download import download_speech_commands
from edgenas.datasets.synthetic import ensure_synthetic_kws
from edgenas.datasets.features import FeatureSet, load_features, mfcc, mfcc_matrices

__all__ = [
    "DATASETS",
    "AudioDataset",
    "Clip",
    "FeatureSet",
    "default_cache_dir",
    "detect_layout",
    "download_speech_commands",
    "ensure_synthetic_kws",
    "fit_length",
    "load_audio",
    "load_features",
    "mfcc",
    "mfcc_matrices",
    "open_dataset",
]
