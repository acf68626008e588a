"""Deploy a bundle (:func:`edgenas.export.bundle.make_bundle`) to an SSH board and run it there.

:func:`deploy_bundle` does, over the board's one SSH connection:

1. checks the board (the runner's cached ``--probe``: python, numpy, runtimes) can run one of the
   bundle's formats for each stage (front end, classifier), choosing as ``infer.py`` does;
2. uploads the bundle folder to ``WORKDIR/bundles/<arch_hash>/`` (the bundle hash when
   bundle.json has no arch hash) with :meth:`SSHBoard.upload_dir` — unchanged files are skipped,
   so a second deploy of the same bundle uploads nothing — and the clip (``wav``, else the
   bundle's ``sample.wav``) to ``WORKDIR/clips/<hash>.wav``;
3. runs ``python3 infer.py --json [--bench N] --threads T [--runtime FMT] CLIP`` there once under
   ``timeout`` (:meth:`SSHBoard.run_python`): the prediction and, with ``bench_runs`` > 0, the
   end-to-end latency (front end + int8 classifier, median and p90 over N runs after warm-up)
   come back as one JSON line.

The profile's runtime decides the format when the bundle has it for both stages and the board
can run it (``litert`` → ``.tflite``, ``onnxruntime`` → ``.onnx``); otherwise ``infer.py`` picks per
stage, in its order, among what the board has.

Errors are one-line :class:`~edgenas.errors.DeviceError`: a local device, an unreachable board
(the adapter's messages), a board without numpy or without a runtime for the bundle (naming what
to install), ``infer.py`` failing (its one-line ``error: …`` from stderr), a timeout. A bundle
folder that is not a bundle raises :class:`~edgenas.errors.ExportError`.
"""

from __future__ import annotations

import json
import posixpath
import time
from pathlib import Path
from typing import Any

from edgenas.errors import DeviceError, ExportError
from edgenas.events import EventSink, null_sink

FORMAT_ORDER = ("tflite", "onnx")  # infer.py's order: the TFLite runtimes first, then onnxruntime
INSTALL_HINTS = {"tflite": "ai-edge-litert (or tflite-runtime, or tensorflow)", "onnx": "onnxruntime"}
PROFILE_FORMATS = {"litert": "tflite", "onnxruntime": "onnx"}


def find_bundle_dir(path: str | Path) -> Path:
    """The bundle folder of ``path``: the folder holding bundle.json, or a make_bundle output folder
    (``path/bundle/bundle.json``). ExportError when there is none."""
    p = Path(path)
    for cand in (p, p / "bundle"):
        if (cand / "bundle.json").is_file():
            return cand
    raise ExportError(f"not a bundle folder (no bundle.json): {p}")


def read_bundle(bundle_dir: Path) -> dict[str, Any]:
    """bundle.json, validated as infer.py validates it, with its model files present."""
    from edgenas.export.bundle_infer import BundleError, load_bundle

    try:
        bundle, _ = load_bundle(str(bundle_dir))
    except BundleError as e:
        raise ExportError(str(e)) from None
    for key in ("frontend", "model"):
        for fmt, name in bundle[key].items():
            if not (bundle_dir / str(name)).is_file():
                raise ExportError(f"bundle {bundle_dir}: {key} file {name} ({fmt}) is missing")
    if not (bundle_dir / "infer.py").is_file():
        raise ExportError(f"bundle {bundle_dir}: infer.py is missing")
    return bundle


def _choose_runtime(bundle: dict[str, Any], probe: dict[str, Any], profile_runtime: str | None,
                    force: str | None, device: str) -> tuple[str | None, dict[str, str]]:
    """(``--runtime`` to pass or None, {stage: format infer.py will use}); DeviceError when the
    board lacks numpy or a runtime for a stage."""
    python = probe.get("executable") or "the board's python"
    if not probe.get("numpy"):
        raise DeviceError(f"device {device}: missing runtime on the board: {python} has no numpy"
                          " (pip install numpy there, or set python in [ssh] of the profile)")
    board = set((probe.get("formats") or {}).keys())
    stages = {"front end": set(bundle["frontend"]), "classifier": set(bundle["model"])}
    if force is not None:
        if force not in FORMAT_ORDER:
            raise DeviceError(f"runtime must be one of {', '.join(FORMAT_ORDER)}, got {force!r}")
        for stage, fmts in stages.items():
            if force not in fmts:
                raise DeviceError(f"device {device}: the bundle has no .{force} {stage} (it has:"
                                  f" {', '.join(sorted(fmts))})")
        if force not in board:
            raise DeviceError(f"device {device}: missing runtime on the board: {python} has no runtime for"
                              f" .{force} models (install {INSTALL_HINTS[force]} there)")
        return force, {stage: force for stage in stages}
    chosen: dict[str, str] = {}
    for stage, fmts in stages.items():
        usable = [f for f in FORMAT_ORDER if f in fmts and f in board]
        if not usable:
            need = " or ".join(INSTALL_HINTS[f] for f in FORMAT_ORDER if f in fmts)
            have = sorted(probe.get("runtimes") or {})
            has = f"only {', '.join(have)}" if have else "no model runtime"
            raise DeviceError(f"device {device}: missing runtime on the board: {python} has {has}, but the"
                              f" bundle's {stage} is {'/'.join('.' + f for f in FORMAT_ORDER if f in fmts)};"
                              f" install {need} there")
        chosen[stage] = usable[0]
    preferred = PROFILE_FORMATS.get(profile_runtime or "")
    if preferred and preferred in board and all(preferred in fmts for fmts in stages.values()):
        return preferred, {stage: preferred for stage in stages}
    return None, chosen


def _infer_error(device: str, status: int, out: str, err: str) -> DeviceError:
    lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
    msg = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
    if msg.startswith("error:"):
        msg = msg[len("error:"):].strip()
    if not msg:
        msg = (out.strip().splitlines() or ["no output"])[-1]
    return DeviceError(f"device {device}: infer.py failed on the board (exit {status}): {msg}")


def deploy_bundle(device: Any, bundle_dir: str | Path, *, wav: str | Path | None = None, bench_runs: int = 50,
                  warmup: int = 5, threads: int | None = None, runtime: str | None = None,
                  timeout_s: float | None = None, sink: EventSink | None = None) -> dict[str, Any]:
    """Upload the bundle to the SSH board ``device`` (a Device or a device name / profile path) and
    classify ``wav`` (a WAV, or an image for an image bundle; default: the bundle's ``sample.*``) there with its ``infer.py``; with
    ``bench_runs`` > 0 also time that many end-to-end inferences after ``warmup`` runs.

    ``threads`` defaults to the profile's; ``runtime`` (``"tflite"``/``"onnx"``) forces one model
    format; ``timeout_s`` bounds the remote call (default: the profile's ``timeout_s``). ``sink``
    gets ``deploy.upload`` and ``deploy.run`` events.

    Returns ``{"device", "label", "index", "score", "scores", "runtime" (infer.py's: front end and
    classifier runtimes with their files, threads), "formats" ({stage: format}), "end_to_end_ms":
    {"median", "p90", "runs", "warmup"} (None without bench), "remote_dir", "clip" (remote path),
    "clip_source", "uploaded" / "skipped" (bundle files), "upload_s", "exec_s", "wall_s",
    "arch_hash", "bundle_hash", "board" (python, numpy, runtimes, identity)}``.
    """
    from edgenas.devices.ssh_board import SSHBoard
    from edgenas.export.bundle import bundle_hash as content_hash
    from edgenas.store import file_hash

    t_start = time.perf_counter()
    emit = sink or null_sink
    if isinstance(device, (str, Path)):
        from edgenas.devices.registry import get_device

        device = get_device(str(device))
    name = getattr(device, "name", type(device).__name__)
    if not isinstance(device, SSHBoard):
        raise DeviceError(f"deploy needs an SSH board profile; {name} is a local device")
    if bench_runs < 0 or warmup < 0:
        raise DeviceError(f"bench_runs and warmup must be >= 0, got {bench_runs} and {warmup}")
    root = find_bundle_dir(bundle_dir)
    bundle = read_bundle(root)
    what = {"image": "image", "series": "case file (.ts or CSV)"}.get(bundle.get("input", "audio"), "WAV file")
    if wav is not None:
        clip_local = Path(wav)
        if not clip_local.is_file():
            raise DeviceError(f"{what} not found: {clip_local}")
        clip_source = str(clip_local)
    else:
        samples = sorted(root.glob("sample.*"))
        if not samples:
            raise DeviceError(f"the bundle {root} has no sample input; pass a {what} to classify")
        clip_local = samples[0]
        clip_source = f"bundle {clip_local.name}"
    key = str(bundle.get("arch_hash") or content_hash(root))
    if not key.replace("-", "").replace("_", "").isalnum():
        key = content_hash(root)
    n_threads = int(threads or device.threads)
    if n_threads < 1:
        raise DeviceError(f"threads must be >= 1, got {n_threads}")
    limit = float(timeout_s if timeout_s is not None else device.ssh.timeout_s)

    probe = device.probe()  # connects; unreachable / auth / host key errors are raised here
    force, formats = _choose_runtime(bundle, probe, device.runtime, runtime, name)

    t0 = time.perf_counter()
    up = device.upload_dir(root, posixpath.join("bundles", key))
    clip_remote = device.put_file(clip_local, posixpath.join("clips", f"{file_hash(clip_local)}{clip_local.suffix.lower()}"))
    upload_s = time.perf_counter() - t0
    emit("deploy.upload", device=name, remote_dir=up["remote_dir"], uploaded=len(up["uploaded"]),
         skipped=len(up["skipped"]), bytes=up["bytes"], seconds=upload_s)

    script = posixpath.join(up["remote_dir"], "infer.py")
    args = ["--json", "--threads", str(n_threads)]
    if bench_runs:
        args += ["--bench", str(int(bench_runs)), "--warmup", str(int(warmup))]
    if force:
        args += ["--runtime", force]
    args.append(clip_remote)
    t1 = time.perf_counter()
    status, out, err = device.run_python(script, args, limit, "inference")
    exec_s = time.perf_counter() - t1
    if status != 0:
        raise _infer_error(name, status, out, err)
    result: dict[str, Any] | None = None
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                result = None
            break
    if not isinstance(result, dict) or "label" not in result:
        last = (out.strip().splitlines() or ["no output"])[-1]
        raise DeviceError(f"device {name}: infer.py printed no result on the board: {last[:200]}")
    bench = result.get("bench")
    e2e = None
    if isinstance(bench, dict):
        e2e = {"median": float(bench["median_ms"]), "p90": float(bench["p90_ms"]), "runs": int(bench["runs"]),
               "warmup": int(bench["warmup"])}
        if "frontend_median_ms" in bench:  # a bundle's infer.py times its two stages apart
            e2e.update(frontend_median=float(bench["frontend_median_ms"]), model_median=float(bench["model_median_ms"]),
                       frontend_p90=float(bench["frontend_p90_ms"]), model_p90=float(bench["model_p90_ms"]))
    emit("deploy.run", device=name, label=result["label"], score=result.get("score"), end_to_end_ms=e2e,
         seconds=exec_s)
    ident = dict(probe.get("identity") or {})
    ident["ssh_target"] = device._where()
    return {
        "device": name,
        "label": result["label"],
        "index": result.get("index"),
        "score": float(result["score"]),
        "scores": result.get("scores", {}),
        "runtime": result.get("runtime", {}),
        "formats": formats,
        "end_to_end_ms": e2e,
        "remote_dir": up["remote_dir"],
        "clip": clip_remote,
        "clip_source": clip_source,
        "uploaded": up["uploaded"],
        "skipped": up["skipped"],
        "upload_s": upload_s,
        "exec_s": exec_s,
        "wall_s": time.perf_counter() - t_start,
        "arch_hash": bundle.get("arch_hash"),
        "bundle_hash": content_hash(root),
        "board": {"python": ident.get("python"), "executable": probe.get("executable"), "numpy": probe.get("numpy"),
                  "runtimes": probe.get("runtimes", {}), "identity": ident},
    }


__all__ = ["deploy_bundle", "find_bundle_dir", "read_bundle"]
