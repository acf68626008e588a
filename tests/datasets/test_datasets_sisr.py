"""SISR data: image folders and the three split layouts, Pillow decoding (grey/palette/alpha/16-bit
→ RGB said in notes, undecodable files as one-line errors), bicubic LR, BT.601 colour, PSNR/SSIM
against hand computations, aligned dihedral patches, tiled inference, and the bicubic baseline on
the real Set5 in ../shared/data/sisr."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgenas.datasets.sisr import (bicubic_down, bicubic_up, dihedral, list_images, load_hr_images, lr_hr_pair,
                                   mod_crop, psnr, read_hr, resolve_splits, rgb_to_y, rgb_to_ycbcr, run_tiled,
                                   sample_patches, split_images, ssim, tile_grid, to_chw_float, to_uint8_hwc,
                                   ycbcr_to_rgb)
from edgenas.errors import DataError
from edgenas.tasks.sr_config import SRConfig

SHARED_SISR = Path(__file__).resolve().parents[3] / "shared" / "data" / "sisr"
SET5_SIZES = {"baby": (512, 512), "bird": (288, 288), "butterfly": (256, 256), "head": (280, 280),
              "woman": (344, 228)}  # (H, W)


@pytest.fixture
def sisr() -> Path:
    if not (SHARED_SISR / "Set5").is_dir():
        pytest.skip(f"shared SISR images not found at {SHARED_SISR}")
    return SHARED_SISR


def _png(path: Path, hw: tuple[int, int] = (16, 16), mode: str = "RGB", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = hw + ((3,) if mode == "RGB" else (4,) if mode == "RGBA" else ())
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def _rgb(hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A random RGB HR image, float32 [3, H, W] on 8-bit steps."""
    return to_chw_float(np.random.default_rng(seed).integers(0, 256, hw + (3,), dtype=np.uint8))


# ---- files -------------------------------------------------------------------------------
def test_list_images_sorted_and_errors(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", "c.tiff"):
        _png(tmp_path / "d" / name)
    (tmp_path / "d" / "notes.txt").write_text("hi")
    _png(tmp_path / "d" / ".hidden.png")
    (tmp_path / "d" / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path / "d")] == ["a.JPG", "b.png", "c.tiff"]
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(DataError, match=f"image folder {folder} "):
            list_images(folder)


def test_set5_loads_rgb_at_manifest_sizes(sisr: Path) -> None:
    notes: list[str] = []
    events: list[str] = []
    files = list_images(sisr / "Set5")
    assert [p.stem for p in files] == sorted(SET5_SIZES)
    for p, img in zip(files, load_hr_images(files, notes=notes, sink=lambda event, **f: events.append(event))):
        assert img.dtype == np.uint8 and img.shape == SET5_SIZES[p.stem] + (3,)
    assert notes == []  # all RGB already
    assert events == ["progress.start"] + ["progress.update"] * 5 + ["progress.end"]


def test_bridge_grey_becomes_rgb_with_a_note(sisr: Path) -> None:
    notes: list[str] = []
    img = read_hr(sisr / "Set14" / "bridge.png", notes)
    assert img.shape == (512, 512, 3) and (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    assert notes == ["bridge.png: grey, used as RGB"]


def test_read_hr_converts_modes_and_says_so(tmp_path: Path) -> None:
    _png(tmp_path / "rgba.png", mode="RGBA")
    Image.open(_png(tmp_path / "src.png")).convert("P").save(tmp_path / "pal.png")
    Image.fromarray(np.full((4, 4), 77, np.uint8), "L").convert("LA").save(tmp_path / "la.png")
    grey16 = np.array([[0, 257 * 100], [65535, 257 * 7 + 100]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    notes: list[str] = []
    rgba = read_hr(tmp_path / "rgba.png", notes)
    assert (rgba == np.asarray(Image.open(tmp_path / "rgba.png"))[..., :3]).all()
    assert (read_hr(tmp_path / "pal.png", notes) == np.asarray(Image.open(tmp_path / "pal.png").convert("RGB"))).all()
    assert (read_hr(tmp_path / "la.png", notes) == 77).all()
    g16 = read_hr(tmp_path / "g16.png", notes)
    assert g16.dtype == np.uint8 and (g16[..., 0] == [[0, 100], [255, 7]]).all()  # scaled, not clipped
    assert read_hr(tmp_path / "src.png", notes).shape == (16, 16, 3)  # RGB: no note
    assert notes == ["rgba.png: alpha dropped, used as RGB", "pal.png: palette, used as RGB",
                     "la.png: grey with alpha (dropped), used as RGB", "g16.png: 16-bit grey, used as RGB"]


def test_undecodable_file_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    good = _png(tmp_path / "cut.png", hw=(64, 64))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    for path in (bad, truncated):
        with pytest.raises(DataError) as info:
            read_hr(path)
        msg = str(info.value)
        assert "\n" not in msg and str(path) in msg
        assert info.value.__cause__ is None and info.value.__suppress_context__


# ---- splits ------------------------------------------------------------------------------
def _split_tree(root: Path, folders: dict[str, int]) -> Path:
    for folder, n in folders.items():
        for i in range(n):
            _png(root / folder / f"{i:03d}.png", hw=(8, 8), seed=i)
    return root


def test_shared_layout_defaults(sisr: Path) -> None:
    splits = resolve_splits(sisr)
    root = sisr.resolve()  # folders come back resolved (../shared may be a symlink)
    assert splits == {"train": root / "BSD68", "val": root / "Set14", "test": root / "Set5"}
    files = split_images(splits)
    assert [len(files[s]) for s in ("train", "val", "test")] == [68, 14, 5]
    swapped = resolve_splits(sisr, train="Set14", val=str(sisr / "BSD68"))  # a subfolder name, an absolute path
    assert swapped["train"] == root / "Set14" and swapped["val"] == root / "BSD68"


def test_train_val_test_layout(tmp_path: Path) -> None:
    root = _split_tree(tmp_path / "d", {"train": 6, "val": 2, "test": 3})
    assert resolve_splits(root) == {s: root / s for s in ("train", "val", "test")}
    files = split_images(resolve_splits(root))
    assert [len(files[s]) for s in ("train", "val", "test")] == [6, 2, 3]
    only_val = _split_tree(tmp_path / "v", {"train": 10, "val": 2})  # no test/: val/ is the test split
    splits = resolve_splits(only_val)
    assert splits == {"train": only_val / "train", "val": only_val / "train", "test": only_val / "val"}
    files = split_images(splits, val_fraction=0.2, seed=0)
    assert len(files["train"]) == 8 and len(files["val"]) == 2 and not set(files["train"]) & set(files["val"])


def test_div2k_layout_holds_val_out_of_train(tmp_path: Path) -> None:
    root = _split_tree(tmp_path / "div2k", {"DIV2K_train_HR": 20, "DIV2K_valid_HR": 4})
    splits = resolve_splits(root)
    assert splits == {"train": root / "DIV2K_train_HR", "val": root / "DIV2K_train_HR", "test": root / "DIV2K_valid_HR"}
    files = split_images(splits)
    assert len(files["val"]) == 2 and len(files["train"]) == 18 and len(files["test"]) == 4
    assert sorted(files["train"] + files["val"]) == list_images(root / "DIV2K_train_HR")
    assert split_images(splits) == files  # seeded: the same every time
    assert split_images(splits, seed=1)["val"] != files["val"]
    with pytest.raises(DataError, match="fraction"):
        split_images(splits, val_fraction=1.0)


def test_bad_layouts_are_one_line_errors(tmp_path: Path) -> None:
    root = _split_tree(tmp_path / "d", {"train": 2, "val": 1, "test": 1, "other": 1})
    cases = [
        (dict(root=tmp_path / "nowhere"), "does not exist"),
        (dict(root=_split_tree(tmp_path / "junk", {"photos": 1})), "cannot detect the SR dataset layout .*Set5.*DIV2K"),
        (dict(root=_split_tree(tmp_path / "half", {"Set5": 1})), "lacks BSD68/, Set14/ of the Set5/Set14/BSD68 layout"),
        (dict(root=_split_tree(tmp_path / "div", {"DIV2K_train_HR": 2})), "not DIV2K_valid_HR"),
        (dict(root=_split_tree(tmp_path / "tr", {"train": 2})), "neither test/ nor val/"),
        (dict(root=root, test="train"), "test folder .* is also the train folder"),
        (dict(root=root, val="other", test="other"), "test folder .* is also the val folder"),
        (dict(root=root, val="missing"), "the val folder .*missing does not exist"),
    ]
    for kwargs, message in cases:
        with pytest.raises(DataError, match=message) as info:
            resolve_splits(**kwargs)
        assert "\n" not in str(info.value)
    named = resolve_splits(tmp_path / "nowhere", train=root / "train", val=root / "val", test=root / "test")
    assert named["test"] == root / "test"  # all three named: the root is not read
    with pytest.raises(DataError, match="has 1 image"):
        split_images({"train": root / "other", "val": root / "other", "test": root / "test"})


# ---- pixels and colour -------------------------------------------------------------------
def test_mod_crop_and_conversions() -> None:
    img = np.random.default_rng(0).integers(0, 256, (13, 10, 3), dtype=np.uint8)
    assert mod_crop(img, 3).shape == (12, 9, 3) and (mod_crop(img, 3) == img[:12, :9]).all()
    assert mod_crop(img, 2).shape == (12, 10, 3) and mod_crop(img[..., 0], 4).shape == (12, 8)
    chw = to_chw_float(img)
    assert chw.dtype == np.float32 and chw.shape == (3, 13, 10) and chw.min() >= 0 and chw.max() <= 1
    assert (to_uint8_hwc(chw) == img).all()
    odd = np.array([[[-0.2, 0.4 / 255, 1.6 / 255, 1.3]]], dtype=np.float32)  # [1, 1, 4]
    assert to_uint8_hwc(odd)[0, :, 0].tolist() == [0, 0, 2, 255]  # rounded, clipped


def test_bicubic_down_is_pillow_bicubic_quantised() -> None:
    hr = _rgb((24, 36))
    for s in (2, 3, 4):
        lr = bicubic_down(hr, s)
        assert lr.dtype == np.float32 and lr.shape == (3, 24 // s, 36 // s)
        steps = lr * 255
        assert np.allclose(steps, np.round(steps), atol=1e-4) and lr.min() >= 0 and lr.max() <= 1
        pil = np.stack([np.asarray(Image.fromarray(c, "F").resize((36 // s, 24 // s), Image.Resampling.BICUBIC))
                        for c in hr])
        assert np.abs(lr - np.clip(pil, 0, 1)).max() <= 0.5 / 255 + 1e-6  # the same kernel, then 8-bit steps
    assert (bicubic_down(np.full((3, 8, 8), 0.4, np.float32), 2) == np.float32(round(0.4 * 255) / 255)).all()
    with pytest.raises(ValueError, match="mod_crop"):
        bicubic_down(_rgb((9, 8)), 2)
    up = bicubic_up(bicubic_down(hr, 2), 2)
    assert up.shape == hr.shape and up.min() >= 0 and up.max() <= 1


def test_ycbcr_known_values_and_round_trip() -> None:
    px = np.array([[1, 0, 0, 1], [1, 0, 1, 0], [1, 0, 0, 0]], dtype=np.float64)[:, None, :]  # white, black, green, red
    ycc = rgb_to_ycbcr(px)[:, 0, :] * 255
    assert np.allclose(ycc[:, 0], [235, 128, 128]) and np.allclose(ycc[:, 1], [16, 128, 128])
    assert np.allclose(ycc[:, 2], [16 + 128.553, 128 - 74.203, 128 - 93.786])
    assert np.allclose(ycc[:, 3], [16 + 65.481, 128 - 37.797, 128 + 112.0])
    rgb = np.random.default_rng(0).random((2, 3, 5, 7)).astype(np.float32)  # a batch
    assert rgb_to_ycbcr(rgb).dtype == np.float32 and rgb_to_ycbcr(rgb).shape == rgb.shape
    assert np.abs(ycbcr_to_rgb(rgb_to_ycbcr(rgb.astype(np.float64))) - rgb).max() < 1e-12
    assert np.abs(ycbcr_to_rgb(rgb_to_ycbcr(rgb)) - rgb).max() < 1e-6
    assert rgb_to_y(rgb).shape == (2, 1, 5, 7) and np.allclose(rgb_to_y(rgb)[:, 0], rgb_to_ycbcr(rgb)[:, 0])


# ---- metrics -----------------------------------------------------------------------------
def test_psnr_hand_values() -> None:
    y = np.random.default_rng(0).uniform(0.1, 0.8, (1, 20, 20))
    assert psnr(y, y, 0) == math.inf
    assert psnr(y + 0.01, y, 0) == pytest.approx(40.0, abs=1e-9)
    assert psnr(y[0] + 0.01, y[0], 4) == pytest.approx(40.0, abs=1e-9)  # [H, W] is Y too
    rgb = np.random.default_rng(1).uniform(0.1, 0.8, (3, 20, 20))
    # a 0.01 offset on R, G and B moves Y by 0.01 · 219/255
    assert psnr(rgb + 0.01, rgb, 2) == pytest.approx(40.0 - 20 * math.log10(219 / 255), abs=1e-9)
    border = y.copy()
    border[:, :2] += 0.3
    assert psnr(border, y, 2) == math.inf and psnr(border, y, 1) < 40  # shave removes the border only
    with pytest.raises(ValueError, match="differ in size"):
        psnr(y[:, :10], y, 0)


def test_ssim_hand_values_and_noise() -> None:
    a, b = np.full((1, 16, 16), 0.5), np.full((1, 16, 16), 0.6)
    c1 = 0.01 ** 2
    assert ssim(a, b, 0) == pytest.approx((2 * 0.5 * 0.6 + c1) / (0.5 ** 2 + 0.6 ** 2 + c1), rel=1e-12)
    rng = np.random.default_rng(0)
    x, z = rng.random((11, 11)), rng.random((11, 11))  # one 11×11 window: SSIM by the formula
    g = np.exp(-(np.arange(11) - 5) ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    mx, mz = (w * x).sum(), (w * z).sum()
    vx, vz, cov = (w * (x - mx) ** 2).sum(), (w * (z - mz) ** 2).sum(), (w * (x - mx) * (z - mz)).sum()
    hand = (2 * mx * mz + c1) * (2 * cov + 0.03 ** 2) / ((mx ** 2 + mz ** 2 + c1) * (vx + vz + 0.03 ** 2))
    assert ssim(x, z, 0) == pytest.approx(hand, rel=1e-9)
    img = _rgb((48, 48))
    assert ssim(img, img, 2) == 1.0
    scores = [ssim(np.clip(img + rng.normal(0, sd, img.shape), 0, 1), img, 2) for sd in (0.01, 0.05, 0.2)]
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0
    with pytest.raises(DataError, match="smaller than the 11x11 SSIM window"):
        ssim(x, z, 1)


# ---- patches and pairs -------------------------------------------------------------------
def _find(big: np.ndarray, patch: np.ndarray) -> list[tuple[int, int]]:
    p = patch.shape[-1]
    return [(i, j) for i in range(big.shape[1] - p + 1) for j in range(big.shape[2] - p + 1)
            if np.array_equal(big[:, i:i + p, j:j + p], patch)]


def test_patches_are_aligned_under_the_same_transform() -> None:
    s, p = 2, 6
    img = _rgb((41, 37))  # mod-cropped to 40 × 36 inside
    lr, hr = sample_patches([img], s, p, per_image=12, seed=3, colour="rgb")
    assert lr.shape == (12, 3, p, p) and hr.shape == (12, 3, p * s, p * s) and lr.dtype == hr.dtype == np.float32
    full_hr = img[:, :40, :36]
    full_lr = bicubic_down(full_hr, s)
    used = set()
    for lp, hp in zip(lr, hr):
        # undo the patch's transform (one of the 8 is its inverse), find it in the LR image, and
        # the HR patch is the HR image at s times that place under the same transform
        hits = [(t, i, j) for t in range(8) for i, j in _find(full_lr, dihedral(lp, t))]
        assert len(hits) >= 1
        t, i, j = hits[0]
        assert np.array_equal(dihedral(hp, t), full_hr[:, i * s:(i + p) * s, j * s:(j + p) * s])
        used.add(t)
        # and the LR patch is the bicubic LR of its HR patch away from the patch border
        assert np.abs(bicubic_down(hp, s)[:, 2:-2, 2:-2] - lp[:, 2:-2, 2:-2]).max() <= 1 / 255 + 1e-6
    assert len(used) > 1


def test_patches_seeded_colour_and_skipping() -> None:
    images = [_rgb((32, 30), seed=0), _rgb((10, 40), seed=1), _rgb((24, 24), seed=2)]
    notes: list[str] = []
    lr, hr = sample_patches(images, 2, 8, per_image=4, seed=0, colour="rgb", notes=notes)
    assert lr.shape == (8, 3, 8, 8) and hr.shape == (8, 3, 16, 16)  # the 10-row image is skipped
    assert notes == ["image 1: its x2 LR image of 20x5 px is smaller than the 8 px patch, skipped"]
    again = sample_patches(images, 2, 8, per_image=4, seed=0, colour="rgb")
    assert np.array_equal(again[0], lr) and np.array_equal(again[1], hr)
    assert not np.array_equal(sample_patches(images, 2, 8, per_image=4, seed=1, colour="rgb")[0], lr)
    ly, hy = sample_patches(images, 2, 8, per_image=4, seed=0, colour="y")
    assert ly.shape == (8, 1, 8, 8) and hy.shape == (8, 1, 16, 16)
    assert np.array_equal(ly, rgb_to_y(lr)) and np.array_equal(hy, rgb_to_y(hr))  # Y of the RGB LR and HR
    named: list[str] = []
    with pytest.raises(DataError, match="no image is large enough for 16 px LR patches"):
        sample_patches(images[1:2], 2, 16, per_image=1, seed=0, colour="y", notes=named, names=["tall.png"])
    assert named[0].startswith("tall.png: ")


def test_lr_hr_pair(sisr: Path) -> None:
    img = read_hr(sisr / "Set5" / "woman.png")  # 344 × 228
    lr, hr = lr_hr_pair(img, 3, "rgb")
    assert hr.shape == (3, 342, 228) and lr.shape == (3, 114, 76)
    assert np.array_equal(lr, bicubic_down(to_chw_float(img[:342]), 3))
    ly, hy = lr_hr_pair(img, 3, "y")
    assert ly.shape == (1, 114, 76) and hy.shape == (1, 342, 228) and np.array_equal(hy, rgb_to_y(hr))


def test_bicubic_baseline_on_set5_x2(sisr: Path) -> None:
    scores = []
    for path in list_images(sisr / "Set5"):
        lr, hr = lr_hr_pair(read_hr(path), 2, "y")
        sr = bicubic_up(lr, 2)
        scores.append((psnr(sr, hr, 2), ssim(sr, hr, 2)))
    mean_psnr, mean_ssim = np.mean(scores, axis=0)
    print(f"bicubic Set5 x2 (Y, shave 2): PSNR {mean_psnr:.3f} dB, SSIM {mean_ssim:.4f}")
    assert 33.46 <= mean_psnr <= 33.86  # the literature's 33.66 dB (MATLAB imresize) ± 0.2
    assert 0.925 <= mean_ssim <= 0.935  # the literature's 0.9299


# ---- tiles -------------------------------------------------------------------------------
def _nearest(s: int):
    return lambda b: b.repeat(s, axis=2).repeat(s, axis=3)


def _blur_then_nearest(s: int):
    """A model with a 3×3 receptive field (edge-padded), then nearest upscaling."""
    def fn(b: np.ndarray) -> np.ndarray:
        x = np.pad(b, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        h, w = b.shape[2:]
        mean = sum(x[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9
        return mean.repeat(s, axis=2).repeat(s, axis=3)
    return fn


def test_tile_grid_counts_match_sr_config() -> None:
    for w, h, tile in [(320, 240, 64), (100, 37, 16), (16, 16, 16), (17, 9, 8)]:
        grid = tile_grid(h, w, tile, 4)
        assert len(grid) == math.ceil(h / tile) * math.ceil(w / tile)
        assert len(grid) == SRConfig(tile=tile, frame_w=w, frame_h=h).tiles_per_frame
        assert grid[0] == (0, 0) and len(set(grid)) == len(grid)


def test_run_tiled_equals_the_whole_image() -> None:
    lr = np.random.default_rng(0).random((3, 37, 53)).astype(np.float32)
    for s, tile, overlap in [(2, 8, 2), (3, 16, 0), (4, 10, 1)]:
        calls: list[int] = []

        def counted(b: np.ndarray, s: int = s) -> np.ndarray:
            calls.append(len(b))
            return _nearest(s)(b)

        out = run_tiled(counted, lr, tile, overlap, s)
        assert out.shape == (3, 37 * s, 53 * s) and np.array_equal(out, _nearest(s)(lr[None])[0])
        assert sum(calls) == len(tile_grid(37, 53, tile, overlap)) and max(calls) <= 16
        # with at least the receptive field's radius of overlap, tiles see what the whole image sees
        whole = _blur_then_nearest(s)(lr[None])[0]
        tiled = run_tiled(_blur_then_nearest(s), lr, tile, max(overlap, 1), s)
        assert np.allclose(tiled, whole, atol=1e-6)
    y = lr[:1]
    assert np.array_equal(run_tiled(_nearest(2), y, 64, 8, 2), y.repeat(2, 1).repeat(2, 2))  # one tile
    with pytest.raises(ValueError, match="tile model returned shape"):
        run_tiled(_nearest(2), lr, 8, 2, 3)
