"""Deployment bundles: everything a board needs to classify a WAV file, in one folder and one tarball.

:func:`make_bundle` writes::

    OUT_DIR/
      bundle/                   the bundle, ready to copy to a board
        bundle.json             what infer.py reads (schema: export/bundle_infer.py); also arch_hash, …
        infer.py                the board-side script (a verbatim copy of export/bundle_infer.py)
        model.int8.tflite       the int8 classifier, one file per format given (…/model.int8.onnx)
        frontend.tflite         the float MFCC front end, one file per format given (…/frontend.onnx)
        labels.txt              one class name per line, in output order
        data_config.json        the DataConfig the model was trained on (DataConfig.from_dict reads it)
        metadata.json           edgenas version, arch hash and spec, per-file I/O shapes, dtypes and
                                quantization parameters read from the files, the caller's metadata
        sample.wav|.png|…       optional: an input to try (infer.py sample.wav)
        README.md               requirements and how to run it on the board
        SHA256SUMS              `sha256sum -c SHA256SUMS` checks every other file
      bundle.tar.gz             the same files under a top folder ``bundle/``

Both are built in a temporary folder beside them (``OUT_DIR/.bundle-tmp-*``) and moved into place
at the end: the tarball by an atomic ``os.replace``; the folder by two renames (an old bundle is
first renamed aside, then deleted), so a killed process never leaves a half-written bundle under
the final name (at worst no ``bundle/`` for the instant between the renames, and a stray
``.bundle-*`` folder that the next call removes).

Inputs are checked before anything is written: each model file must exist, be non-empty and be of
its declared format (TFLite flatbuffer identifier, parseable ONNX without external data); labels
must match the spec's class count and, where a runtime can read the file, the classifier's outputs;
the front end must take the data config's ``clip_samples``. Problems raise
:class:`~edgenas.errors.ExportError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

import edgenas
from edgenas.errors import ExportError
from edgenas.store import file_hash
from edgenas.spec import ArchSpec
from edgenas.tasks import task_of

INFER_SCRIPT = Path(__file__).resolve().parent / "bundle_infer.py"
BUNDLE_DIRNAME = "bundle"
TARBALL_NAME = "bundle.tar.gz"
FORMATS = ("tflite", "onnx")
MODEL_NAMES = {"tflite": "model.int8.tflite", "onnx": "model.int8.onnx"}
FRONTEND_NAMES = {"tflite": "frontend.tflite", "onnx": "frontend.onnx"}
SUMS_NAME = "SHA256SUMS"
SCHEMA_VERSION = 1
STALE_TMP_S = 3600.0  # leftover .bundle-tmp-* folders older than this are removed


# ---------------------------------------------------------------------------------- helpers


def sha256_file(path: Path) -> str:
    """Full hex sha256 of a file's content."""
    return file_hash(path, 64)


def _check_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise ExportError(f"{what} is empty: {path}")
    return path


def _is_tflite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(8)[4:8] == b"TFL3"


_LAYOUT_OPS = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"}


def _onnx_io(path: Path, what: str) -> dict[str, Any]:
    """Inputs/outputs (name, shape, dtype), quantization of a QDQ model's I/O and metadata_props."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ExportError(f"{what} {path} is not a readable ONNX model: {_first_line(e)}") from None
    g = model.graph
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in g.initializer):
        raise ExportError(f"{what} {path} keeps its weights in external data files; save it as one file"
                          " (onnx.save(onnx.load(path), path, save_as_external_data=False))")
    init_names = {t.name for t in g.initializer}
    inits = {t.name: t for t in g.initializer}

    def tensor(vi: Any) -> dict[str, Any]:
        tt = vi.type.tensor_type
        dims = [int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else None
        return {"name": vi.name, "shape": dims, "dtype": dtype}

    def qparams(node: Any) -> dict[str, Any] | None:
        if len(node.input) < 2 or node.input[1] not in inits:
            return None
        scale = numpy_helper.to_array(inits[node.input[1]]).reshape(-1)
        zp = numpy_helper.to_array(inits[node.input[2]]).reshape(-1) if len(node.input) > 2 and \
            node.input[2] in inits else np.zeros(1, np.int8)
        if scale.size != 1:
            return None
        return {"scale": float(scale[0]), "zero_point": int(zp[0]), "dtype": zp.dtype.name}

    inputs = [tensor(v) for v in g.input if v.name not in init_names]
    outputs = [tensor(v) for v in g.output]
    res: dict[str, Any] = {"inputs": inputs, "outputs": outputs,
                           "metadata": {p.key: p.value for p in model.metadata_props}}
    quant: dict[str, Any] = {}
    # the input is quantized by the first QuantizeLinear reached from it through layout-only ops
    # (Reshape, Flatten, …: they keep the values, hence the quantization parameters)
    reach = {v["name"] for v in inputs}
    out_names = {v["name"] for v in outputs}
    for node in g.node:
        if not node.input or node.input[0] not in reach:
            continue
        if node.op_type in _LAYOUT_OPS:
            reach.update(node.output)
        elif node.op_type == "QuantizeLinear" and "input" not in quant:
            q = qparams(node)
            if q:
                quant["input"] = q
    for node in g.node:
        if node.op_type == "DequantizeLinear" and node.output and node.output[0] in out_names:
            q = qparams(node)
            if q:
                quant["output"] = q
    if quant and "output" not in quant:  # e.g. a final QGemm: float logits, its int32 accumulator dequantized
        last = next((n.op_type for n in g.node if set(n.output) & out_names), None)
        quant["output"] = {"dtype": "float32", "requantized": False, "op": last}
    if quant:
        quant["scheme"] = "qdq"
        res["quantization"] = quant
    return res


def _tflite_io(path: Path, what: str) -> dict[str, Any] | None:
    """Inputs/outputs with quantization (scale, zero point) of a TFLite model and its edgenas
    metadata; None when no TFLite runtime is installed here (the file is then only checked for its
    flatbuffer identifier)."""
    try:
        from edgenas.export.frontend import _tflite_interpreter
    except ImportError:  # pragma: no cover - part of the package
        return None
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        try:
            from edgenas.export.keras_build import import_tf

            import_tf()
        except ExportError:
            return None
    try:
        interp = _tflite_interpreter(model_path=str(path))
    except ExportError as e:
        raise ExportError(f"{what} {path}: {e}") from None

    def tensor(d: dict[str, Any]) -> dict[str, Any]:
        scale, zero = d.get("quantization", (0.0, 0))
        t = {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
        if float(scale) > 0:
            t["scale"], t["zero_point"] = float(scale), int(zero)
        return t

    inputs = [tensor(d) for d in interp.get_input_details()]
    outputs = [tensor(d) for d in interp.get_output_details()]
    res: dict[str, Any] = {"inputs": inputs, "outputs": outputs}
    quant = {}
    for key, ts in (("input", inputs), ("output", outputs)):
        if len(ts) == 1 and "scale" in ts[0]:
            quant[key] = {"scale": ts[0]["scale"], "zero_point": ts[0]["zero_point"], "dtype": ts[0]["dtype"]}
    if quant:
        quant["scheme"] = "full-int8"
        res["quantization"] = quant
    try:
        from edgenas.export.tflite_export import read_tflite_metadata

        res["metadata"] = read_tflite_metadata(path)
    except Exception:  # metadata is informative only
        res["metadata"] = {}
    return res


def describe_model(path: str | Path, fmt: str, what: str = "model") -> dict[str, Any]:
    """What :func:`make_bundle` records about one model file: size, sha256, and (where this machine
    can read the file) inputs/outputs with shapes, dtypes and quantization parameters, plus the
    metadata embedded by edgenas's exporters. Raises ExportError for a missing, empty or
    wrong-format file."""
    path = _check_file(Path(path), f"{what} file ({fmt})")
    if fmt not in FORMATS:
        raise ExportError(f"unknown {what} format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "tflite":
        if not _is_tflite(path):
            raise ExportError(f"{what} file {path} is not a TFLite model (no TFL3 identifier)")
        io_ = _tflite_io(path, what)
    else:
        if _is_tflite(path):
            raise ExportError(f"{what} file {path} is a TFLite model, given as onnx")
        io_ = _onnx_io(path, what)
    return {"size": path.stat().st_size, "sha256": sha256_file(path), **(io_ or {})}


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _count(shape: list[Any]) -> int | None:
    if not shape or any(not isinstance(d, int) or d <= 0 for d in shape):
        return None
    return int(np.prod(shape))


def _check_io(desc: dict[str, Any], path: Path, what: str, n_in: int, n_out: int | None) -> None:
    """One input of ``n_in`` values and (if ``n_out``) one output of ``n_out`` values."""
    ins, outs = desc.get("inputs"), desc.get("outputs")
    if ins is None or outs is None:
        return
    if len(ins) != 1 or len(outs) != 1:
        raise ExportError(f"{what} {path} must have one input and one output, has {len(ins)} and {len(outs)}")
    got = _count(ins[0]["shape"])
    if got is not None and got != n_in:
        raise ExportError(f"{what} {path} takes {ins[0]['shape']} ({got} values), the data config gives {n_in}")
    got = _count(outs[0]["shape"])
    if n_out is not None and got is not None and got != n_out:
        raise ExportError(f"{what} {path} gives {got} outputs for {n_out} labels")


def _check_sample(path: Path, kind: str, data: Any = None) -> None:
    if kind == "audio":
        return _check_wav(path)
    if kind == "series":
        import numpy

        from edgenas.export.bundle_infer import BundleError, read_case

        _check_file(path, "sample case")
        try:
            read_case(str(path), data.dims, numpy)
        except BundleError as e:
            raise ExportError(f"sample case {e}") from None
        return None
    from edgenas.datasets.images import check_image_file
    from edgenas.errors import DataError

    _check_file(path, "sample image")
    try:
        check_image_file(path)
    except DataError as e:
        raise ExportError(f"sample image {path}: {e}") from None


def _check_wav(path: Path) -> None:
    _check_file(path, "sample WAV")
    try:
        with wave.open(str(path), "rb") as w:
            if w.getnframes() == 0:
                raise ExportError(f"sample WAV {path} has no samples")
    except (wave.Error, EOFError) as e:
        raise ExportError(f"sample WAV {path} is not a PCM WAV file: {_first_line(e)}") from None


def _check_labels(labels: list[str], spec: ArchSpec) -> list[str]:
    labels = [str(s) for s in labels]
    if not labels and not spec.num_classes:  # a network that does not classify (super-resolution)
        return []
    if not labels:
        raise ExportError("labels must not be empty")
    for s in labels:
        if not s.strip() or "\n" in s or "\r" in s or s != s.strip():
            raise ExportError(f"bad label {s!r}: labels are non-empty single-line names")
    if len(set(labels)) != len(labels):
        raise ExportError(f"labels are not unique: {labels}")
    if len(labels) != spec.num_classes:
        raise ExportError(f"{len(labels)} labels for a spec with {spec.num_classes} classes")
    return labels


def _format_map(files: dict[str, Path], what: str) -> dict[str, Path]:
    if not isinstance(files, dict) or not files:
        raise ExportError(f"no {what} files given (need a 'tflite' and/or 'onnx' entry)")
    bad = sorted(set(files) - set(FORMATS))
    if bad:
        raise ExportError(f"unknown {what} format(s) {', '.join(map(repr, bad))}; choose from {', '.join(FORMATS)}")
    return {fmt: Path(files[fmt]) for fmt in FORMATS if fmt in files}


_INPUT_TEXT = {  # the board script's two inputs, in the README's words
    "audio": ("a WAV file", "CLIP.wav",
              "Any PCM WAV (8/16/24/32-bit, any rate, mono or multi-channel) is accepted: it is mixed to mono,\n"
              "resampled to {sample_rate} Hz and centre-cropped or zero-padded to {clip_ms:g} ms, as in training."),
    "series": ("one time-series case (the first data line of a `.ts` file, or a CSV row)", "CASE.csv",
               "A `.ts` line (dimensions split by `:`, values by `,`; a trailing label is ignored) or a CSV file\n"
               "(one row of {dims} × n values, dimension-major, or {dims} rows) is accepted; `?` or empty values\n"
               "are missing and interpolated; the case is brought to {length} values by {padding} padding, as in training."),
    "sr": ("an image file (PNG, JPEG, … — what Pillow reads)", "LR.png",
           "Any image Pillow decodes is accepted (needs `pillow`): it is converted to RGB, cut into tiles of\n"
           "{tile} px with {overlap} px of context, each tile upscaled ×{scale} by the front end and the model\n"
           "({colour} model; a Y model's chroma is upscaled bicubic) and the tiles stitched into the output PNG."),
    "image": ("an image file (PNG, JPEG, … — what Pillow reads)", "IMAGE.png",
              "Any image Pillow decodes is accepted (needs `pillow`): it is converted to RGB and resized to\n"
              "{source_h}×{source_w} px (bilinear) as in training; the front end then resizes it to the model's input."),
}


def _run_lines(clip: str) -> list[str]:
    return [f"python3 infer.py {clip}                  # prints: LABEL SCORE",
            f"python3 infer.py {clip} --json           # one JSON object: label, score, scores, logits, runtime",
            f"python3 infer.py {clip} --bench 50       # also: latency_ms median M p90 P",
            f"python3 infer.py {clip} --bench 50 --warmup 10 --threads 4 --runtime tflite --json"]


def _sr_run_lines(clip: str) -> list[str]:
    return [f"python3 infer.py {clip} --out SR.png     # prints: wrote SR.png (W×H → W'×H', N tiles)",
            f"python3 infer.py {clip} --json           # one JSON object: output, sizes, tiles, runtime",
            f"python3 infer.py {clip} --bench 20       # also: latency_ms per frame median M p90 P",
            f"python3 infer.py {clip} --bench 20 --warmup 5 --threads 4 --runtime tflite --json"]


def _readme(bundle: dict[str, Any], sample: str | None, spec: ArchSpec, frontend_text: str) -> str:
    dc = spec.data
    models = ", ".join(f"`{f}`" for f in bundle["model"].values())
    fronts = ", ".join(f"`{f}`" for f in bundle["frontend"].values())
    what, placeholder, accepted = _INPUT_TEXT[bundle["input"]]
    clip = sample or placeholder
    has_sample = sample is not None
    runtimes = []
    if "tflite" in bundle["model"] or "tflite" in bundle["frontend"]:
        runtimes.append("`ai-edge-litert` (or `tflite-runtime`, or `tensorflow`) for `.tflite`")
    if "onnx" in bundle["model"] or "onnx" in bundle["frontend"]:
        runtimes.append("`onnxruntime` for `.onnx`")
    lines = [
        f"# edgenas bundle — {spec.task} ({spec.space}), arch {spec.hash()}",
        "",
        (f"Classifies {what} into one of {len(bundle['labels'])} classes: "
         + ", ".join(f"`{s}`" for s in bundle["labels"]) + ".") if bundle["labels"] else
        f"Upscales {what} ×{dc.to_dict().get('scale')} and writes a PNG (`--out SR.png`).",
        "",
        "## Requirements",
        "",
        "- Python >= 3.7 and `numpy`",
        "- one runtime: " + "; or ".join(runtimes),
        "",
        "Nothing else: `infer.py` needs neither edgenas nor PyTorch. With several runtimes installed,",
        "each stage takes the first of ai_edge_litert → tflite_runtime → tensorflow → onnxruntime",
        "for which this bundle has a file (`--runtime onnx|tflite` forces one format).",
        "",
        "## Run",
        "",
        "```sh",
        *(_run_lines(clip) if bundle["labels"] else _sr_run_lines(clip)),
        "sha256sum -c SHA256SUMS                  # check the files",
        "```",
        "",
        accepted.format(**dc.to_dict()),
        "`--bench N` times N end-to-end inferences (front end + classifier, after warm-up)." if bundle["labels"] else
        "`--bench N` times N whole frames (every tile through the front end and the model, after warm-up).",
        "Errors are one line on stderr with exit code 2.",
        "",
        "## Files",
        "",
        "| file | what |",
        "|---|---|",
        "| `infer.py` | the script above (standard library + numpy + a runtime) |",
        "| `bundle.json` | what infer.py reads: labels, data config, file names per format |",
        f"| {models} | the int8 classifier (front-end output → class logits) |",
        f"| {fronts} | the float front end ({frontend_text}) |",
        *(["| `labels.txt` | class names, one per line, in output order |"] if bundle["labels"] else []),
        "| `data_config.json` | the data configuration the model was trained with |",
        "| `metadata.json` | edgenas version, architecture, tensor shapes and quantization parameters |",
    ]
    if has_sample:
        lines.append(f"| `{sample}` | an input to try |")
    lines += [f"| `{SUMS_NAME}` | sha256 of every other file |", ""]
    return "\n".join(lines)


def _sweep(out_dir: Path) -> None:
    """Remove what an interrupted make_bundle left: old bundles renamed aside, stale build folders."""
    now = time.time()
    for p in out_dir.glob(".bundle-*"):
        try:
            if p.name.startswith(".bundle-old-") or (p.name.startswith(".bundle-tmp-")
                                                     and now - p.stat().st_mtime > STALE_TMP_S):
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _write_tar(src: Path, dest: Path, files: list[str]) -> None:
    """``dest`` (.tar.gz) with ``files`` of ``src`` under the top folder ``bundle/``; owner and
    modes normalised (0644, infer.py 0755), one mtime for all."""
    mtime = int(time.time())

    def info(name: str, size: int, mode: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime, ti.type = size, mode, mtime, kind
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    with open(dest, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(info(BUNDLE_DIRNAME, 0, 0o755, tarfile.DIRTYPE))
            for name in files:
                p = src / name
                mode = 0o755 if name == "infer.py" else 0o644
                with open(p, "rb") as f:
                    tar.addfile(info(f"{BUNDLE_DIRNAME}/{name}", p.stat().st_size, mode), f)
        raw.flush()
        os.fsync(raw.fileno())


# ---------------------------------------------------------------------------------- API


def make_bundle(out_dir: Path, *, models: dict[str, Path], frontends: dict[str, Path], labels: list[str],
                spec: ArchSpec, metadata: dict[str, Any] | None = None, sample: Path | None = None,
                output: str = "logits") -> dict[str, Any]:
    """Write ``out_dir/bundle/`` and ``out_dir/bundle.tar.gz`` (see the module doc), atomically.

    ``models`` / ``frontends`` map a format (``"tflite"``, ``"onnx"``) to the int8 classifier /
    the float front-end file of that format; ``labels`` are the class names in output order;
    ``metadata`` (JSON-serialisable) is stored in metadata.json next to what is read from the
    files (per-format I/O shapes, dtypes, quantization scale and zero point); ``output`` says
    whether the classifier gives ``"logits"`` (infer.py applies softmax) or ``"probabilities"``.

    Returns ``{"bundle_dir", "tarball", "bundle_hash", "arch_hash", "files": [{"name", "size",
    "sha256"}, …], "tarball_size", "tarball_sha256", "formats": {"model": […], "frontend": […]}}``.
    ``bundle_hash`` is the first 16 hex digits of the sha256 of SHA256SUMS (the content of every
    file). Raises ExportError (one line) for bad inputs; nothing is written then.
    """
    if not isinstance(spec, ArchSpec):
        raise ExportError(f"spec must be an ArchSpec, got {type(spec).__name__}")
    if output not in ("logits", "probabilities"):
        raise ExportError(f"output must be 'logits' or 'probabilities', got {output!r}")
    model_files = _format_map(models, "classifier model")
    front_files = _format_map(frontends, "front-end model")
    labels = _check_labels(labels, spec)
    if not INFER_SCRIPT.is_file():  # pragma: no cover - part of the package
        raise ExportError(f"the board script is missing from the installation: {INFER_SCRIPT}")
    fe = task_of(spec.data).frontend()
    if sample is not None:
        sample = Path(sample)
        _check_sample(sample, fe.raw_input, spec.data)
    md = dict(metadata or {})
    arch_hash = spec.hash()
    if md.get("arch_hash") not in (None, arch_hash):
        raise ExportError(f"metadata arch_hash {md['arch_hash']} does not match the spec's hash {arch_hash}")

    dc = spec.data
    n_features = int(np.prod(dc.input_shape))
    described: dict[str, dict[str, Any]] = {"models": {}, "frontends": {}}
    for fmt, path in model_files.items():
        d = describe_model(path, fmt, "classifier model")
        _check_io(d, path, "classifier model", n_features, len(labels) or None)
        described["models"][fmt] = {"file": MODEL_NAMES[fmt], "source": Path(path).name, **d}
    for fmt, path in front_files.items():
        d = describe_model(path, fmt, "front-end model")
        _check_io(d, path, "front-end model", int(np.prod(fe.raw_shape(dc))), n_features)
        described["frontends"][fmt] = {"file": FRONTEND_NAMES[fmt], "source": Path(path).name, **d}

    quant = dict(md.get("quantization") or {}) if isinstance(md.get("quantization"), dict) else {}
    for fmt, d in described["models"].items():
        if "quantization" in d:
            quant[fmt] = d["quantization"]
    md.update({
        "edgenas_version": md.get("edgenas_version", edgenas.__version__),
        "arch_hash": arch_hash,
        "arch_spec": spec.to_dict(),
        "data_config": dc.to_dict(),
        "labels": labels,
        "output": output,
        "quantization": quant,
        "models": described["models"],
        "frontends": described["frontends"],
    })
    bundle = {
        "schema_version": SCHEMA_VERSION,
        "input": fe.raw_input,
        "labels": labels,
        "data_config": dc.to_dict(),
        "frontend": {fmt: FRONTEND_NAMES[fmt] for fmt in front_files},
        "model": {fmt: MODEL_NAMES[fmt] for fmt in model_files},
        "output": output,
        "arch_hash": arch_hash,
        "task": spec.task,
        "space": spec.space,
        "edgenas_version": md["edgenas_version"],
    }
    try:
        md_text = json.dumps(md, indent=2, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ExportError(f"metadata is not JSON-serialisable: {_first_line(e)}") from None

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create {out_dir}: {e.strerror or e}") from None
    _sweep(out_dir)
    final_dir, final_tar = out_dir / BUNDLE_DIRNAME, out_dir / TARBALL_NAME
    staging = Path(tempfile.mkdtemp(prefix=".bundle-tmp-", dir=out_dir))
    try:
        work = staging / BUNDLE_DIRNAME
        work.mkdir()
        for fmt, path in model_files.items():
            shutil.copyfile(path, work / MODEL_NAMES[fmt])
        for fmt, path in front_files.items():
            shutil.copyfile(path, work / FRONTEND_NAMES[fmt])
        shutil.copyfile(INFER_SCRIPT, work / "infer.py")
        (work / "infer.py").chmod(0o755)
        (work / "bundle.json").write_text(json.dumps(bundle, indent=2) + "\n")
        if labels:
            (work / "labels.txt").write_text("".join(s + "\n" for s in labels))
        (work / "data_config.json").write_text(json.dumps(dc.to_dict(), indent=2) + "\n")
        (work / "metadata.json").write_text(md_text + "\n")
        sample_name = None if sample is None else "sample" + sample.suffix.lower()
        if sample is not None:
            shutil.copyfile(sample, work / sample_name)
        (work / "README.md").write_text(_readme(bundle, sample_name, spec, fe.describe(dc)))
        names = sorted(p.name for p in work.iterdir())
        files = [{"name": n, "size": (work / n).stat().st_size, "sha256": sha256_file(work / n)} for n in names]
        sums = "".join(f"{f['sha256']}  {f['name']}\n" for f in files)
        (work / SUMS_NAME).write_text(sums)
        files.append({"name": SUMS_NAME, "size": len(sums.encode()), "sha256": hashlib.sha256(sums.encode()).hexdigest()})
        files.sort(key=lambda f: f["name"])
        for p in work.iterdir():
            if p.name != "infer.py":
                p.chmod(0o644)
        tmp_tar = staging / TARBALL_NAME
        _write_tar(work, tmp_tar, [f["name"] for f in files])
        # move into place: the folder (old one renamed aside first), then the tarball
        old = None
        if final_dir.exists() or final_dir.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=".bundle-old-", dir=out_dir)) / BUNDLE_DIRNAME
            os.rename(final_dir, old)
        os.rename(work, final_dir)
        os.replace(tmp_tar, final_tar)
        if old is not None:
            shutil.rmtree(old.parent, ignore_errors=True)
    except OSError as e:
        raise ExportError(f"cannot write the bundle in {out_dir}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "bundle_dir": str(final_dir),
        "tarball": str(final_tar),
        "bundle_hash": hashlib.sha256(sums.encode()).hexdigest()[:16],
        "arch_hash": arch_hash,
        "files": files,
        "tarball_size": final_tar.stat().st_size,
        "tarball_sha256": sha256_file(final_tar),
        "formats": {"model": sorted(model_files), "frontend": sorted(front_files)},
    }


def bundle_hash(bundle_dir: str | Path) -> str:
    """The bundle's content hash (as :func:`make_bundle` returns it): sha256 of its SHA256SUMS, or
    of the sorted (name, sha256) list of its files when it has none."""
    d = Path(bundle_dir)
    sums = d / SUMS_NAME
    if sums.is_file():
        return sha256_file(sums)[:16]
    text = "".join(f"{sha256_file(p)}  {p.name}\n" for p in sorted(d.iterdir()) if p.is_file())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


__all__ = ["make_bundle", "describe_model", "bundle_hash", "sha256_file", "MODEL_NAMES", "FRONTEND_NAMES",
           "BUNDLE_DIRNAME", "TARBALL_NAME"]
