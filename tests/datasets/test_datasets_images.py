"""Image folders: layout, one-line errors naming the file or folder, grey/RGBA → RGB and mixed sizes
handled and said, the stratified held-out split, the matrix front end, the CIFAR-10 download
(against a local HTTP server) and the real sample set in ../shared/data."""

from __future__ import annotations

import hashlib
import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgenas.datasets.images import (check_image_file, download_cifar10, held_out, load_pixels, open_image_folder,
                                     resize_matrix, transform)
from edgenas.errors import DataError

from datasets_helpers import tar_gz

SHARED_CIFAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10_images"


class _Cfg:
    def __init__(self, resolution: int, colour: str = "rgb") -> None:
        self.resolution, self.colour = resolution, colour


def _png(path: Path, size: tuple[int, int] = (8, 8), mode: str = "RGB", seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chans = {"RGB": 3, "RGBA": 4, "L": None}[mode]
    arr = rng.integers(0, 256, (size[0], size[1]) + ((chans,) if chans else ()), dtype=np.uint8)
    Image.fromarray(arr, mode).save(path)


def _folder(root: Path, classes=("cat", "dog"), n: int = 10, test: bool = False) -> Path:
    for c in classes:
        for i in range(n):
            _png(root / "train" / c / f"{i}.png", seed=i)
        for i in range(3):
            _png(root / "val" / c / f"{i}.png", seed=100 + i)
            if test:
                _png(root / "test" / c / f"{i}.png", seed=200 + i)
    return root


def test_layout_and_splits(tmp_path: Path) -> None:
    ds = open_image_folder(_folder(tmp_path / "d"), val_fraction=0.2, seed=0)
    assert ds.classes == ["cat", "dog"] and ds.size == (8, 8)
    assert ds.counts() == {"train": [8, 8], "val": [2, 2], "test": [3, 3]}  # val held out of train/, stratified
    train = {it.path for it in ds.splits["train"]}
    assert not train & {it.path for it in ds.splits["val"]}
    assert all("/val/" in it.path for it in ds.splits["test"])  # no test/: val/ is the test split
    again = open_image_folder(tmp_path / "d", val_fraction=0.2, seed=0)
    assert again.fingerprint() == ds.fingerprint()
    shutil.copytree(tmp_path / "d", tmp_path / "moved" / "d")  # the split follows the files, not the folder's place
    moved = open_image_folder(tmp_path / "moved" / "d", val_fraction=0.2, seed=0)
    rel = lambda d, r: sorted(str(Path(it.path).relative_to(r)) for it in d.splits["val"])
    assert rel(moved, tmp_path / "moved" / "d") == rel(ds, tmp_path / "d")
    other = open_image_folder(tmp_path / "d", val_fraction=0.2, seed=1)
    assert {it.path for it in other.splits["val"]} != {it.path for it in ds.splits["val"]}
    with_test = open_image_folder(_folder(tmp_path / "t", test=True))
    assert all("/test/" in it.path for it in with_test.splits["test"]) and with_test.unused == ["val"]


def test_held_out_keeps_one_of_every_class_in_train() -> None:
    from edgenas.datasets.images import ImageItem

    items = [ImageItem(f"a{i}", 0) for i in range(2)] + [ImageItem("b0", 1)]
    keep, out = held_out(items, 0.5, seed=0)
    assert len(out) == 1 and {it.label for it in keep} == {0, 1}


@pytest.mark.parametrize("breakage, message", [
    (lambda r: (r / "train" / "cat" / "x.png").write_bytes(b"not a png"), "cannot decode image .*x.png"),
    (lambda r: (r / "train" / "cat" / "notes.txt").write_text("hi"), "notes.txt is not an image file"),
    (lambda r: (r / "train" / "bird").mkdir(), "class folder .*bird has no images"),
    (lambda r: _png(r / "val" / "fish" / "0.png"), "fish is a class that .*train does not have"),
    (lambda r: (r / "train" / "cat" / "9.png").write_bytes(b""), "cannot decode image .*9.png"),
])
def test_bad_inputs_are_one_line_errors_naming_the_file(tmp_path: Path, breakage, message) -> None:
    root = _folder(tmp_path / "d")
    breakage(root)
    with pytest.raises(DataError, match=message) as e:
        open_image_folder(root)
    assert "\n" not in str(e.value)


def test_missing_parts_and_one_class(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no train/ folder"):
        open_image_folder(tmp_path)
    _folder(tmp_path / "one", classes=("cat",))
    with pytest.raises(DataError, match="1 class \\(cat\\)"):
        open_image_folder(tmp_path / "one")
    root = _folder(tmp_path / "nov")
    import shutil

    shutil.rmtree(root / "val")
    with pytest.raises(DataError, match="neither val/ nor test/"):
        open_image_folder(root)


def test_truncated_image_fails_when_decoded_naming_it(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    bad = root / "val" / "cat" / "0.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # the header reads, the pixels do not
    ds = open_image_folder(root)
    with pytest.raises(DataError, match="cannot decode image .*val/cat/0.png"):
        check_image_file(bad)
    with pytest.raises(DataError, match="val/cat/0.png"):
        load_pixels(ds, "test", cache_dir=tmp_path / "cache")


def test_grey_rgba_and_other_sizes_are_converted_and_said(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    _png(root / "train" / "cat" / "grey.png", mode="L")
    _png(root / "train" / "dog" / "alpha.png", mode="RGBA")
    _png(root / "train" / "dog" / "big.png", size=(16, 12))
    events = []
    ds = open_image_folder(root, sink=lambda e, **f: events.append((e, f)))
    notes = " ".join(f["message"] for e, f in events if e == "data.images")
    assert "1 image(s) not 8x8 px are resized" in notes and "L, RGBA are converted to RGB" in notes
    px = load_pixels(ds, "train", cache_dir=tmp_path / "cache")
    assert px.shape == (len(ds.splits["train"]), 8, 8, 3) and px.dtype == np.uint8
    split = next(s for s in ("train", "val") if any(it.path.endswith("grey.png") for it in ds.splits[s]))
    spx = load_pixels(ds, split, cache_dir=tmp_path / "cache")
    grey = next(i for i, it in enumerate(ds.splits[split]) if it.path.endswith("grey.png"))
    assert (spx[grey, ..., 0] == spx[grey, ..., 1]).all()  # grey replicated to three channels
    # the decoded pixels are cached: a second load reads the same array from disk
    cached = load_pixels(ds, "train", cache_dir=tmp_path / "cache")
    assert np.array_equal(cached, px)
    assert list((tmp_path / "cache" / "images").rglob("train.u8.npy"))


def test_resize_matrices_and_front_end() -> None:
    for n_out, n_in in ((16, 32), (48, 32), (32, 32), (24, 32)):
        m = resize_matrix(n_out, n_in)
        assert m.shape == (n_out, n_in) and np.allclose(m.sum(axis=1), 1.0) and (m >= 0).all()
    assert np.allclose(resize_matrix(32, 32), np.eye(32))  # native size: identity
    # halving averages pixel pairs' neighbourhood (antialiased), a constant image stays constant
    px = np.full((2, 32, 32, 3), 200, np.uint8)
    for r, colour in ((16, "rgb"), (48, "grey")):
        x = transform(px, _Cfg(r, colour))
        assert x.shape == (2, 3 if colour == "rgb" else 1, r, r) and np.allclose(x, 200 / 255, atol=1e-5)
    # grey is ITU-R 601 luma of the resized colour image
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    rgb, grey = transform(px, _Cfg(24)), transform(px, _Cfg(24, "grey"))
    assert np.allclose(grey[:, 0], np.tensordot(rgb, [0.299, 0.587, 0.114], axes=([1], [0])), atol=1e-5)


def test_shared_cifar10_sample_opens() -> None:
    if not SHARED_CIFAR.is_dir():
        pytest.skip("../shared/data/cifar10_images is not here")
    ds = open_image_folder(SHARED_CIFAR, val_fraction=0.1, seed=0)
    assert len(ds.classes) == 10 and ds.size == (32, 32) and not ds.notes
    assert ds.counts()["val"] == [50] * 10 and ds.counts()["train"] == [450] * 10
    assert ds.counts()["test"] == [100] * 10


# ---- CIFAR-10 download against a local HTTP server (the `server` fixture, conftest.py) -----------
def _cifar_archive(n: int = 4) -> bytes:
    """The CIFAR-10 python archive's layout and pickle format, with ``n`` images per batch."""
    rng = np.random.default_rng(0)
    members = {"cifar-10-batches-py/batches.meta": pickle.dumps({b"label_names": [b"airplane", b"cat"]})}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        members[f"cifar-10-batches-py/{name}"] = pickle.dumps(
            {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [i % 2 for i in range(n)]})
    return tar_gz(members)


def test_cifar10_download_writes_an_image_folder(server, tmp_path: Path) -> None:
    base, www = server
    archive = _cifar_archive()
    (www / "cifar.tar.gz").write_bytes(archive)
    sha = hashlib.sha256(archive).hexdigest()
    root = download_cifar10(tmp_path / "cache", url=f"{base}/cifar.tar.gz", sha256=sha)
    assert sorted(p.name for p in (root / "train").iterdir()) == ["airplane", "cat"]
    assert len(list((root / "train" / "cat").glob("*.png"))) == 10  # 2 of 4 per batch × 5 batches
    assert len(list((root / "test" / "airplane").glob("*.png"))) == 2
    # the first image is the archive's first row, channel-planar → HWC, losslessly
    first = pickle.loads(tarfile.open(fileobj=io.BytesIO(archive)).extractfile(
        "cifar-10-batches-py/data_batch_1").read())[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(np.asarray(Image.open(root / "train" / "airplane" / "00000.png")), first)
    ds = open_image_folder(root)
    assert ds.classes == ["airplane", "cat"] and ds.size == (32, 32)
    (www / "cifar.tar.gz").unlink()
    assert download_cifar10(tmp_path / "cache", url=f"{base}/cifar.tar.gz", sha256=sha) == root  # no-op


def test_cifar10_download_errors(server, tmp_path: Path) -> None:
    base, www = server
    (www / "cifar.tar.gz").write_bytes(_cifar_archive())
    with pytest.raises(DataError, match="checksum mismatch"):
        download_cifar10(tmp_path / "c1", url=f"{base}/cifar.tar.gz", sha256="0" * 64)
    with pytest.raises(DataError, match="cannot download"):
        download_cifar10(tmp_path / "c2", url=f"{base}/missing.tar.gz")
    (www / "other.tar.gz").write_bytes(tar_gz({"something/else.txt": b"hi"}))
    with pytest.raises(DataError, match="is not the CIFAR-10 python archive"):
        download_cifar10(tmp_path / "c3", url=f"{base}/other.tar.gz")
