from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgenas.datasets import fit_length, load_audio
from edgenas.datasets.audio import WaveCache
from edgenas.errors import DataError


def test_load_audio_mono_and_resample(tmp_path: Path, make_wav) -> None:
    p = make_wav(tmp_path / "stereo.wav", rate=8000, seconds=0.5, channels=2)
    same = load_audio(p, 8000)
    assert same.dtype == np.float32 and same.ndim == 1 and len(same) == 4000
    up = load_audio(p, 16000)
    assert up.dtype == np.float32 and len(up) == 8000
    assert abs(float(np.abs(up).max()) - 0.3) < 0.02


def test_corrupt_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x01garbage" + bytes(range(200)))
    with pytest.raises(DataError) as e:
        load_audio(bad, 16000)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    with pytest.raises(DataError, match="notes.wav"):
        load_audio(text, 16000)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0), 16000, subtype="PCM_16")
    with pytest.raises(DataError, match="empty.wav"):
        load_audio(p, 16000)


def test_fit_length() -> None:
    x = np.arange(10, dtype=np.float32)
    assert np.array_equal(fit_length(x, 4), x[3:7])
    padded = fit_length(x, 14)
    assert len(padded) == 14 and np.array_equal(padded[2:12], x) and padded[:2].sum() == 0
    assert fit_length(x, 10) is x


def test_wave_cache_reuses_decoded_audio(tmp_path: Path, make_wav) -> None:
    p = make_wav(tmp_path / "a.wav")
    cache = WaveCache()
    a = cache.get(p, 8000)
    b = cache.get(p, 8000)
    assert a is b and not a.flags.writeable
    assert cache.get(p, 16000) is not a
