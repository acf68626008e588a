"""Super-resolution search quality: under a per-frame budget, does the searched network beat
FSRCNN and ESPCN trained here by the same recipe, and random search at equal wall-clock?

One cell per scale: ``../shared/data/sisr`` (train BSD68, the search's validation Set14, test Set5,
never read before the final test), the ``litert-cpu`` device, a 320×240 LR frame, budgets per
frame end to end (front end + int8 model on every tile): latency ``--budget-ms`` (the profile's
p10), RAM of one tile ``--ram-kb``. ×2 with three seeds, ×4 with one (``--scales``/``--seeds``).
Every method trains with the same recipe (the task's defaults: L1 loss, 30 epochs on
BSD68 + Set14 patches) and is scored the same way:

* ``edgenas`` — ``edgenas search --task sr`` (the task's defaults, ``edgenas tasks``);
* ``fsrcnn`` / ``espcn`` — ``bench/sr_baselines.py`` on the data configuration the edgenas run of
  the same seed chose (its tile and colour), so the latency is compared on the same tiling;
* ``random`` — sr-dlsr specs drawn uniformly among those the same cost models (latency model,
  front-end table, RAM) say fit, each trained ``--random-epochs`` on the train patches and
  scored on the validation patches until the edgenas run's search wall-clock is spent; the best
  is trained with the full recipe and tested;
* ``bicubic`` — the baseline every SR paper lists (no network).

Scores (``score_files``): every Set5 image upscaled tile by tile (``datasets.sisr.run_tiled``)
with the exported files (PyTorch fp32 and the int8 TFLite file), then PSNR and SSIM on Y,
``scale`` px shaved, the image rounded to 8 bits as a saved PNG is. Also: parameters,
Mult-Adds per frame, measured per-frame latency (model and front end, every tile), whether the
budgets hold; paired differences (edgenas − other) per seed with 95% t intervals (×2); a
PSNR–latency plot.

    python bench/sr_quality.py                          # the cell (×2 three seeds, ×4 one seed)
    python bench/sr_quality.py --scales 2 --seeds 0 --epochs 2 --search-epochs 2   # a smoke run
    python bench/sr_quality.py --report-only            # tables and plot from the rows so far

Rows go to ``results/sr_quality.rows.jsonl`` (a row already there is not run again; an
interrupted edgenas run resumes). Runs live in ``results/runs/sr/``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import sr_baselines  # noqa: E402

METHODS = ("edgenas", "fsrcnn", "espcn", "random", "bicubic")
PAIRS = (("edgenas", "fsrcnn"), ("edgenas", "espcn"), ("edgenas", "random"))


def score_files(images: list[np.ndarray], scale: int, data: Any, fns: dict[str, Callable[[np.ndarray], np.ndarray]]
                ) -> dict[str, dict[str, float]]:
    """Mean Set5 PSNR / SSIM (Y, shaved, 8-bit rounded) of each tile function in ``fns``."""
    from edgenas.datasets.sisr import lr_hr_pair, psnr, run_tiled, ssim, to_chw_float, to_uint8_hwc

    out: dict[str, dict[str, list[float]]] = {k: {"psnr": [], "ssim": []} for k in fns}
    for im in images:
        lr, hr = lr_hr_pair(im, scale, data.colour)
        for name, fn in fns.items():
            sr = run_tiled(fn, lr, data.tile, data.overlap, scale)
            sr8 = to_chw_float(to_uint8_hwc(np.clip(sr, 0, 1)))
            out[name]["psnr"].append(psnr(sr8, hr, scale))
            out[name]["ssim"].append(ssim(sr8, hr, scale))
    return {k: {m: float(np.mean(v)) for m, v in d.items()} for k, d in out.items()}


def _torch_fn(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def fn(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
    return fn


def _tflite_fn(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    from edgenas.export.tflite_export import run_tflite

    return lambda x: run_tflite(path, np.ascontiguousarray(x, dtype=np.float32))


class Cell:
    def __init__(self, a: Any, scale: int, seed: int) -> None:
        self.a, self.scale, self.seed = a, scale, seed
        self.runs = a.out / "runs"
        self.data = str(a.data_root / "sisr")

    def name(self, method: str) -> str:
        return f"sisr-x{self.scale}-{self.a.device}-{self.a.budget_ms:g}ms-s{self.seed}-{method}-e{self.a.epochs}"

    def flags(self) -> dict[str, Any]:
        return {"task": "sr", "data": self.data, "device": self.a.device, "seed": self.seed,
                "max_latency_ms": self.a.budget_ms, "max_ram_kb": self.a.ram_kb, "train.epochs": self.a.epochs,
                "search.epochs": self.a.search_epochs, "space.scale": self.scale, "space.frame": self.a.frame}

    def pipeline(self, name: str) -> Any:
        from edgenas import config as C
        from edgenas.pipeline import Pipeline
        from edgenas.runs import RunDir

        cfg = C.resolve(flags=self.flags())
        path = self.runs / "sr" / name
        run = RunDir(path, resume=(path / "state.json").exists())
        return Pipeline(cfg, run), run

    def images(self, p: Any) -> list[np.ndarray]:
        return p.dataset.images("test")

    def row(self, method: str, p: Any, data: Any, model: Any, int8: Path, lat: dict[str, float], layers: Any,
            search_s: float, **extra: Any) -> dict[str, Any]:
        from edgenas.devices.frontend_cost import file_memory

        sc = score_files(self.images(p), self.scale, data, {"fp32": _torch_fn(model.eval()), "int8": _tflite_fn(int8)})
        ram, flash = file_memory(int8)
        fe = p.frontend_table().get(data)
        e2e = lat["model_ms"] + lat["frontend_ms"]
        return {"method": method, "scale": self.scale, "seed": self.seed, "device": self.a.device,
                "budget_ms": self.a.budget_ms, "ram_kb_limit": self.a.ram_kb, "epochs": self.a.epochs,
                "cpu": common.cpu_model(), "psnr_fp32": sc["fp32"]["psnr"], "ssim_fp32": sc["fp32"]["ssim"],
                "psnr_int8": sc["int8"]["psnr"], "ssim_int8": sc["int8"]["ssim"], "frame_ms": e2e, **lat,
                "ram_kb": (ram + fe.ram_bytes) / 1024, "flash_kb": flash / 1024,
                "holds": e2e <= self.a.budget_ms and (ram + fe.ram_bytes) / 1024 <= self.a.ram_kb,
                "params": float(sum(d.params for d in layers)),
                "mult_adds_g": float(sum(d.macs * d.calls for d in layers)) / 1e9, "data_config": data.to_dict(),
                "search_s": search_s, **extra}

    def _measure(self, p: Any, path: Path, data: Any) -> dict[str, float]:
        """Per-frame latency of the int8 file and the front end (every tile), the budget's statistic."""
        from edgenas.devices.measure import measure_cached
        from edgenas.tasks import calls_per_input

        m = measure_cached(p.device, p.store, path, kind="model", fmt=f"{p.device.artifact_format}-int8",
                           runs=p.cfg.measure.runs, warmup=p.cfg.measure.warmup, loads=p.loads)
        calls = calls_per_input(data)
        return {"model_ms": m.stat(p.latency_stat) * calls, "frontend_ms": p.frontend_table().get(data).latency_ms * calls}

    def edgenas(self) -> dict[str, Any]:
        name = self.name("edgenas")
        args = ["--runs-dir", str(self.runs), "--name", name]
        if not (self.runs / "sr" / name / "state.json").exists():
            args += ["--task", "sr", "--data", self.data, "--device", self.a.device, "--scale", str(self.scale),
                     "--frame", self.a.frame, "--max-latency-ms", str(self.a.budget_ms), "--max-ram-kb",
                     str(self.a.ram_kb), "--seed", str(self.seed), "--epochs", str(self.a.epochs),
                     "--search-epochs", str(self.a.search_epochs)]
        else:
            args += ["--resume"]
        m = common.edgenas_search(args, "sr_quality")
        p, run = self.pipeline(name)
        with run:
            from edgenas.spec import ArchSpec

            spec = ArchSpec.from_json(run.file("arch.json").read_text())
            model = p.load_model(spec)
            int8 = run.file("export") / m["budgets"]["latency"]["model"]["artifact"]
            lat = {"model_ms": m["budgets"]["latency"]["model"]["measured"],
                   "frontend_ms": m["budgets"]["latency"]["frontend"]["measured"]}
            state = json.loads(run.file("state.json").read_text())
            return self.row("edgenas", p, spec.data, model, int8, lat, p.space.layers(spec),
                            state["stages"]["search"]["seconds"], choices=spec.choices, run=str(run.path))

    def baseline(self, method: str, data: Any) -> dict[str, Any]:
        import torch

        from edgenas import config as C

        p, run = self.pipeline(self.name(method))
        with run:
            run.write_json("config.json", C.to_dict(p.cfg))
            torch.manual_seed(self.seed)
            model = sr_baselines.build(method, data)
            trained = run.file("model.pt").is_file()
            if trained:
                model.load_state_dict(torch.load(run.file("model.pt"), weights_only=True))
            _, r8, _ = common.train_export_measure(p, run, model, data, self.seed, method, trained=trained)
            path = run.file("export") / r8["file"]
            return self.row(method, p, data, model, path, self._measure(p, path, data),
                            sr_baselines.BASELINES[method](data), 0.0, run=str(run.path))

    def bicubic(self, data: Any) -> dict[str, Any]:
        from edgenas.datasets.sisr import bicubic_up, lr_hr_pair, psnr, ssim, to_chw_float, to_uint8_hwc

        p, run = self.pipeline(self.name("edgenas"))
        ps, ss = [], []
        for im in self.images(p):
            lr, hr = lr_hr_pair(im, self.scale, "y")
            sr = to_chw_float(to_uint8_hwc(bicubic_up(lr, self.scale)))
            ps.append(psnr(sr, hr, self.scale))
            ss.append(ssim(sr, hr, self.scale))
        return {"method": "bicubic", "scale": self.scale, "seed": self.seed, "device": self.a.device,
                "budget_ms": self.a.budget_ms, "ram_kb_limit": self.a.ram_kb, "epochs": self.a.epochs,
                "psnr_fp32": float(np.mean(ps)), "ssim_fp32": float(np.mean(ss)), "psnr_int8": float(np.mean(ps)),
                "ssim_int8": float(np.mean(ss)), "frame_ms": None, "params": 0.0, "mult_adds_g": 0.0,
                "data_config": data.to_dict(), "search_s": 0.0, "holds": None}

    def random_search(self, seconds: float) -> dict[str, Any]:
        import torch

        from edgenas import cost
        from edgenas.train import evaluate, train_model

        p, run = self.pipeline(self.name("random"))
        with run:
            run.mark("config", {}, 0.0) if not run.done("config") else None
            lat, ram = p.latency_model(), cost.peak_ram(p.space)
            fe = p.frontend_table()
            from edgenas.tasks import calls_per_input

            def feasible(spec: Any) -> bool:
                f = fe.get(spec.data)
                return (lat.cost(spec) + f.latency_ms * calls_per_input(spec.data) <= self.a.budget_ms
                        and (ram.cost(spec) + f.ram_bytes) / 1024 <= self.a.ram_kb)

            short = dataclasses.replace(p.cfg.train, epochs=self.a.random_epochs)
            rng = random.Random(self.seed)
            t0, tried = time.perf_counter(), []
            while time.perf_counter() - t0 < seconds or not tried:
                spec = next(s for s in (p.space.sample(rng) for _ in range(100000)) if feasible(s))
                va = p.features("val", spec.data)
                torch.manual_seed(self.seed)
                model = p.space.build(spec)
                train_model(model, *p.training_set(spec.data), short, p.task, seed=self.seed)
                tried.append({"spec": spec, "val": evaluate(model, va.x, va.y, p.task, va.groups)})
            best = max(tried, key=lambda t: t["val"])
            spent = time.perf_counter() - t0
        p, run = self.pipeline(self.name("random") + "-final")
        spec = best["spec"]
        with run:
            m = common.run_fixed_spec(p, run, spec, spent)
            model = p.load_model(spec)
            int8 = run.file("export") / m["budgets"]["latency"]["model"]["artifact"]
            lat = {"model_ms": m["budgets"]["latency"]["model"]["measured"],
                   "frontend_ms": m["budgets"]["latency"]["frontend"]["measured"]}
            return self.row("random", p, spec.data, model, int8, lat, p.space.layers(spec), spent,
                            candidates=len(tried), best_val=best["val"], choices=spec.choices, run=str(run.path))


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["method"], r["scale"], r["seed"], r["device"], r["budget_ms"], r["epochs"])


def summarize(rows: list[dict[str, Any]], scale: int) -> str:
    def ms(vals: list[float], f: str = ".2f") -> str:
        vals = [v for v in vals if v is not None]
        if not vals:
            return "–"
        return f"{statistics.mean(vals):{f}} ± {statistics.stdev(vals):{f}}" if len(vals) > 1 else f"{vals[0]:{f}}"

    out = []
    for method in METHODS:
        rs = [r for r in rows if r["method"] == method and r["scale"] == scale]
        if not rs:
            continue
        cfgs = sorted({f"{r['data_config']['colour']} t{r['data_config']['tile']}" for r in rs})
        out.append([method, len(rs), ms([r["psnr_fp32"] for r in rs]), ms([r["psnr_int8"] for r in rs]),
                    ms([r["ssim_int8"] for r in rs], ".4f"), ms([r["params"] / 1e3 for r in rs], ".1f"),
                    ms([r["mult_adds_g"] for r in rs], ".2f"), ms([r["frame_ms"] for r in rs], ".1f"),
                    ms([r.get("ram_kb") for r in rs], ".0f"),
                    f"{sum(bool(r['holds']) for r in rs)}/{len(rs)}" if rs[0]["holds"] is not None else "–",
                    ", ".join(cfgs)])
    head = ["method", "seeds", "PSNR fp32 dB", "PSNR int8 dB", "SSIM int8", "params k", "G Mult-Adds/frame",
            "frame ms", "RAM KiB", "budgets hold", "colour, tile"]
    text = common.table(head, out)
    by = {(r["method"], r["seed"]): r for r in rows if r["scale"] == scale}
    pairs = []
    for mine, other in PAIRS:
        seeds = sorted(s for (m, s) in by if m == other and (mine, s) in by)
        if not seeds:
            continue
        d = [by[(mine, s)]["psnr_int8"] - by[(other, s)]["psnr_int8"] for s in seeds]
        dl = [by[(mine, s)]["frame_ms"] - by[(other, s)]["frame_ms"] for s in seeds]
        if len(d) > 1:
            mean, sd, lo, hi = common.paired_interval(d)
            pairs.append([mine, other, len(d), f"{mean:+.2f} ± {sd:.2f}", f"[{lo:+.2f}, {hi:+.2f}]",
                          f"{statistics.mean(dl):+.1f}"])
        else:
            pairs.append([mine, other, 1, f"{d[0]:+.2f}", "–", f"{dl[0]:+.1f}"])
    if pairs:
        text += f"\n\nPaired by seed (×{scale}), method − other: int8 PSNR dB, and frame latency ms:\n\n"
        text += common.table(["method", "other", "pairs", "PSNR difference", "95% t interval", "latency difference"],
                             pairs)
    return text


def plot(rows: list[dict[str, Any]], out: Path, budget_ms: float) -> None:
    plt = common.pyplot()
    rows = [r for r in rows if r.get("frame_ms") is not None]
    if plt is None or not rows:
        return
    scales = sorted({r["scale"] for r in rows})
    fig, axes = plt.subplots(1, len(scales), figsize=(6 * len(scales), 4.5), squeeze=False)
    colours = dict(zip(METHODS, ("C0", "C1", "C2", "C3", "C7")))
    for ax, s in zip(axes[0], scales):
        for r in (r for r in rows if r["scale"] == s):
            ax.scatter(r["frame_ms"], r["psnr_int8"], c=colours[r["method"]], s=60,
                       marker="o" if r["data_config"]["colour"] == "y" else "s")
        bic = [r for r in rows if r["method"] == "bicubic" and r["scale"] == s]
        ax.axvline(budget_ms, color="grey", ls="--", lw=1)
        for m in METHODS[:4]:
            ax.scatter([], [], c=colours[m], label=m)
        ax.set_xlabel("measured frame latency, ms (320×240 LR, front end + int8 model, every tile)")
        ax.set_ylabel("Set5 PSNR (Y), int8, dB")
        ax.set_title(f"×{s} on litert-cpu (square: RGB model)" + (f"; bicubic {bic[0]['psnr_fp32']:.2f} dB" if bic else ""),
                     fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sr_quality.png", dpi=120)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--device", default="litert-cpu")
    p.add_argument("--budget-ms", type=float, default=150.0, help="per-frame latency budget, ms (default 150)")
    p.add_argument("--ram-kb", type=float, default=512.0, help="peak RAM of one tile, KiB (default 512)")
    p.add_argument("--frame", default="320x240")
    p.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 at ×2, 0 at ×4")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--search-epochs", type=int, default=10)
    p.add_argument("--random-epochs", type=int, default=3, help="epochs per random-search candidate")
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    common.use_bench_dirs(a.out)
    rows_path = a.out / "sr_quality.rows.jsonl"
    rows = _rows(rows_path)
    done = {_key(r) for r in rows}
    if not a.report_only:
        for scale in a.scales:
            for seed in (a.seeds if a.seeds is not None else ([0, 1, 2] if scale == 2 else [0])):
                cell = Cell(a, scale, seed)
                ed: dict[str, Any] | None = next((r for r in rows if _key(r) == ("edgenas", scale, seed, a.device,
                                                                                  a.budget_ms, a.epochs)), None)
                for method in ("edgenas", *[m for m in a.methods if m != "edgenas"]):
                    key = (method, scale, seed, a.device, a.budget_ms, a.epochs)
                    if key in done:
                        continue
                    t0 = time.perf_counter()
                    print(f"sr_quality: x{scale} seed {seed} {method} …", file=sys.stderr, flush=True)
                    from edgenas.tasks.sr_config import SRConfig

                    data = SRConfig(**ed["data_config"]) if ed else None
                    if method == "edgenas":
                        row = ed = cell.edgenas()
                    elif method == "bicubic":
                        row = cell.bicubic(data)
                    elif method == "random":
                        row = cell.random_search(ed["search_s"] if ed else 300.0)
                    else:
                        row = cell.baseline(method, data)
                    row["wall_s"] = time.perf_counter() - t0
                    with rows_path.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    rows.append(row)
                    done.add(key)
                    print(f"  {method}: PSNR int8 {row['psnr_int8']:.2f} dB (fp32 {row['psnr_fp32']:.2f}), frame "
                          f"{row['frame_ms'] if row['frame_ms'] is None else round(row['frame_ms'], 1)} ms "
                          f"({row['wall_s']:.0f} s)", file=sys.stderr, flush=True)
    cell_rows = [r for r in rows if r["device"] == a.device and r["budget_ms"] == a.budget_ms
                 and r["epochs"] == a.epochs]
    md = "\n\n".join(f"# Super-resolution ×{s} (Set5 test; {a.device}; {a.frame} LR frame; budgets {a.budget_ms:g} ms "
                     f"per frame, {a.ram_kb:g} KiB per tile; {a.epochs} epochs)\n\n" + summarize(cell_rows, s)
                     for s in sorted({r["scale"] for r in cell_rows}))
    common.write(a.out, "sr_quality", {"rows": cell_rows}, md)
    plot(cell_rows, a.out, a.budget_ms)


if __name__ == "__main__":
    main()
