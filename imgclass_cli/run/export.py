"""Export a run's model as SavedModel, TFLite (float32/float16/int8), ONNX or .keras, with labels and a parity check.

The exported graph starts *after* the model's Resizing layer: its input is a fixed
(batch, image_size, image_size, 3) float32 of 0-255 RGB, decoded and resized by `imagefile.decode` exactly
as `imgclass predict` does (squash, crop or pad, as the run was trained: export.json's `resize`), computed in
float32 whatever the run trained in. That keeps the one resize of the project outside the graph (the antialiased resize
is not a TFLite builtin op) and makes "same preprocessing" checkable: the parity check feeds the same arrays to
the Keras model of the run and to the export and compares their top-1 predictions.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from imgclass_cli import files, fs
from imgclass_cli._tf import quiet_native_stderr
from imgclass_cli.config import ExportConfig, ExportFormat, Quantize, Resize
from imgclass_cli.data import dataset
from imgclass_cli.errors import GateFailed, ImgclassError, first_line
from imgclass_cli.model.parts import parts
from imgclass_cli.run import predictors, rundir
REPRESENTATIVE_IMAGES = 200  # int8 calibration: enough to settle activation ranges, a few seconds to run


@dataclass
class Parity:
    images: int
    agreement: float  # fraction of images whose top-1 class is the same as the run's Keras model
    max_abs_diff: float  # largest probability difference over all images and classes
    source: str  # where the images came from
    min_agreement: float
    passed: bool


@dataclass
class ExportResult:
    out: str
    format: str
    quantize: str | None
    model: str  # path of the model file or folder
    bytes: int
    image_size: int
    class_names: list[str]
    parity: Parity | None = None
    files: list[str] = field(default_factory=list)
    int8_mode: str | None = None  # full-integer | dynamic-range (--quantize int8 only)


def default_out(run_path: str, fmt: str, quantize: str | None) -> str:
    return os.path.join(run_path, "export", fmt + (f"-{quantize}" if quantize else ""))


# ---------------------------------------------------------------- images recorded in the run

def recorded_images(info, splits: tuple[str, ...]) -> tuple[list[str], str]:
    """Absolute paths of the run's images of the first split in `splits` that has any (split.csv + config data)."""
    split_file = os.path.join(info.path, files.SPLIT)
    root = info.extra.get("data", "")
    if not os.path.exists(split_file):
        raise ImgclassError(f"{info.path}: no {files.SPLIT}; pass --data FOLDER with images to use")
    rows = rundir.read_split(split_file)
    records = None
    if root and dataset.is_tfrecord(root):  # the run trained on a TFRecord folder: its images are records there
        records = {s.path: s for s in dataset.records(root)}
    for split in splits:
        paths = [os.path.join(root, r["path"]) for r in rows if r["split"] == split]
        if paths and records is not None:
            found = [records[p] for p in paths if p in records]
            if found:
                return found, f"{split} split of {root}"
        elif paths:
            missing = [p for p in paths if not os.path.exists(p)]
            if len(missing) == len(paths):
                raise ImgclassError(
                    f"the {split} images recorded in {split_file} are not under {root} any more "
                    "(moved?); pass --data FOLDER with images to use"
                )
            return [p for p in paths if os.path.exists(p)], f"{split} split of {root}"
    raise ImgclassError(f"{split_file}: no {' or '.join(splits)} images recorded; pass --data FOLDER")


def folder_images(folder: str) -> tuple[list[str], str]:
    from imgclass_cli.run.inference import expand_inputs

    if not os.path.isdir(folder):
        raise ImgclassError(f"{folder}: no such folder")
    paths = list(expand_inputs([folder]))
    if not paths:
        raise ImgclassError(f"{folder}: no images found")
    return paths, folder


def sample(paths: list[str], n: int, seed: int) -> list[str]:
    """n paths spread over the list (which is grouped by class), the same ones for the same seed."""
    if n >= len(paths):
        return list(paths)
    picked = sorted(random.Random(seed).sample(range(len(paths)), n))
    return [paths[i] for i in picked]


def load_images(paths: list[str], image_size: int, progress=None, resize: str = "squash") -> np.ndarray:
    """Decode with the project's one decoder (as predict does, the `resize` way); unreadable files are left out.
    progress(done, total) after each batch."""
    from imgclass_cli.data import pipeline

    batches, done = [], 0
    for b in pipeline.iter_batches(paths, image_size, 64, resize=Resize(resize)):
        done += len(b.paths)
        if progress is not None:
            progress(done, len(paths))
        if b.images is not None:
            batches.append(b.images)
    if not batches:
        raise ImgclassError("none of the images for the parity check or calibration could be read")
    return np.concatenate(batches)


# ---------------------------------------------------------------- writers

def serving_model(model):
    """The run's model from its Resizing layer's output on: input (None, size, size, 3) float32 0-255."""
    from imgclass_cli._tf import keras

    return keras().Model(parts(model).resize.output, model.output, name=f"{model.name}_serving")


def write_savedmodel(model, image_size: int, path: str) -> None:
    """A TF SavedModel whose serving_default signature maps `image` to `probabilities`."""
    from imgclass_cli._tf import keras, tf

    sub = serving_model(model)
    archive = keras().export.ExportArchive()
    archive.track(sub)
    archive.add_endpoint(
        name="serve",
        fn=lambda image: {"probabilities": sub(image, training=False)},
        input_signature=[tf().TensorSpec([None, image_size, image_size, 3], tf().float32, name="image")],
    )
    with quiet_native_stderr():
        archive.write_out(path, verbose=False)


def write_onnx(model, image_size: int, path: str) -> None:
    """An ONNX model (Keras' exporter, through tf2onnx) whose input `image` gives the output `probabilities`."""
    import logging
    import warnings

    from imgclass_cli._tf import tf

    try:
        import onnx
        import tf2onnx  # noqa: F401  (Keras' exporter imports it; a clear message when it is missing)
    except ImportError:
        raise ImgclassError("--to onnx needs tf2onnx and onnx: pip install 'imgclass[onnx]'") from None
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    sub = serving_model(model)
    spec = tf().TensorSpec([None, image_size, image_size, 3], tf().float32, name="image")
    with quiet_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sub.export(path, format="onnx", verbose=False, input_signature=[spec])
        except Exception as e:
            raise ImgclassError(f"ONNX conversion failed: {first_line(e)}") from None
    graph = onnx.load(path)
    _rename_output(graph, "probabilities")
    fs.write_bytes_atomic(path, graph.SerializeToString())


def _rename_output(graph, name: str) -> None:
    """tf2onnx names the output after the graph's tensor (Identity:0): call it what export.json says."""
    old = graph.graph.output[0].name
    for node in graph.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
    graph.graph.output[0].name = name


INT8_MODES = ("full-integer", "dynamic-range")


def tflite_bytes(saved_model_dir: str, quantize: str | None, representative: np.ndarray | None = None,
                 int8_mode: str = "full-integer") -> bytes:
    """Convert a SavedModel written by write_savedmodel.

    float16: weights stored as float16, computed in float32 (half the size, same predictions to ~1e-4).
    int8, full-integer: int8 weights *and* activations, activation ranges calibrated on a representative sample of
    the run's own training images; float32 input and output tensors, so the model is fed the same 0-255 pixels as
    every other format and returns probabilities. It is what int8 accelerators and the integer CPU kernels run.
    int8, dynamic-range: int8 weights, activations quantized on the fly per batch; no calibration, the same 4x
    smaller file, and closer to the float model when calibrated ranges are too coarse (see `export`).
    """
    from imgclass_cli._tf import tf

    t = tf()
    conv = t.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if quantize == "float16":
        conv.optimizations = [t.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [t.float16]
    elif quantize == "int8":
        conv.optimizations = [t.lite.Optimize.DEFAULT]
        if int8_mode == "full-integer":
            def gen():
                for i in range(len(representative)):
                    yield [representative[i:i + 1]]

            conv.representative_dataset = gen
            conv.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8, t.lite.OpsSet.TFLITE_BUILTINS]
    with quiet_native_stderr():
        try:
            return conv.convert()
        except Exception as e:
            raise ImgclassError(f"TFLite conversion failed: {first_line(e)}") from None


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


# ---------------------------------------------------------------- the command

def export(run_path: str, config: ExportConfig, *, seed: int | None = None, reporter=None) -> ExportResult:
    """Write RUN's model as config.format into config.out (default RUN/export/FMT[-QUANTIZE]) with labels,
    export.json and the parity check (images from config.data, else the run's recorded ones); nothing is installed
    when the check fails. An existing export directory is replaced only with config.force."""
    say = reporter.info if reporter is not None else (lambda m: None)
    stage = reporter.stage if reporter is not None else (lambda *a, **k: contextlib.nullcontext(None))
    fmt = ExportFormat(config.format)
    quantize = Quantize(config.quantize) if config.quantize is not None else None
    if quantize is not None and fmt != ExportFormat.tflite:
        raise ImgclassError(f"--quantize {quantize.value} applies to --to tflite only, not --to {fmt.value}")
    if not 0.0 <= config.min_agreement <= 1.0:
        raise ImgclassError(f"--min-agreement must be between 0 and 1; got {config.min_agreement}")
    out = config.out or default_out(run_path, fmt.value, quantize.value if quantize else None)
    with fs.locked(out):
        return _export(run_path, fmt, quantize, config, out, config.force, config.data, seed, say, stage)


def _export(run_path: str, fmt: ExportFormat, quantize: Quantize | None, config: ExportConfig, out: str, force: bool,
            data: str | None, seed: int | None, say, stage) -> ExportResult:
    fs.check_out(out, force, fs.EXPORT)

    model, info = rundir.load(run_path)
    from imgclass_cli.model.build import apply_precision, resize_mode

    apply_precision(model, "float32")  # every export computes in float32: it runs anywhere
    resize = resize_mode(model).value
    seed = info.config.seed if seed is None else seed
    representative = None
    if quantize == Quantize.int8:
        paths, source = folder_images(data) if data else recorded_images(info, ("train",))
        paths = sample(paths, REPRESENTATIVE_IMAGES, seed)
        say(f"calibrating int8 ranges on {len(paths)} images of the {source}")
        with stage("reading calibration images") as progress:
            representative = load_images(paths, info.image_size, progress, resize)
    check = None
    if config.parity > 0:
        paths, parity_source = folder_images(data) if data else recorded_images(info, ("val", "test", "train"))
        with stage("reading parity images") as progress:
            x = load_images(sample(paths, config.parity, seed + 1), info.image_size, progress, resize)
        check = ParityInput(x, model(x, training=False).numpy(), parity_source, config.min_agreement)

    meta = _export_meta(run_path, fmt, quantize, info.image_size, info.class_names, resize)
    # Refused before writing when it cannot fit: TensorFlow's own writers fail mid-file on a full disk.
    fs.check_space(os.path.dirname(os.path.abspath(out)), _bytes_needed(model, fmt, run_path))
    with fs.staged(out, force, fs.EXPORT) as tmp:
        fs.write_json_atomic(os.path.join(tmp, files.LABELS), list(info.class_names))
        fs.write_text_atomic(os.path.join(tmp, files.LABELS_TXT), "".join(f"{n}\n" for n in info.class_names))
        parity = _write_checked(model, run_path, tmp, meta, representative, check, say)
        written = sorted(os.listdir(tmp))
    model_path = os.path.join(out, meta["model"])
    return ExportResult(out, fmt.value, meta["quantize"], model_path, _size(model_path), info.image_size,
                        list(info.class_names), parity, written, meta.get("int8_mode"))


def _bytes_needed(model, fmt: ExportFormat, run_path: str) -> int:
    """About what the export writes at most: the .keras file as it is; a SavedModel holds the weights; a TFLite
    export writes a SavedModel first, then a file of the weights (float32 at most) beside it."""
    if fmt == ExportFormat.keras:
        return os.path.getsize(os.path.join(run_path, files.MODEL))
    weights = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    return weights * (2 if fmt == ExportFormat.tflite else 1)  # a lower bound: TensorFlow adds its metadata


def _disk_full_as_oserror(e, folder: str) -> None:
    """TensorFlow's writers (SaveV2) report a full disk as ResourceExhaustedError: raise it as the OSError fs.staged
    turns into the one "no space left on device" line."""
    import errno

    if isinstance(e, OSError) and e.errno in fs.NO_SPACE:
        raise e
    message = str(getattr(e, "message", e))
    if "No space left on device" in message or "Disk quota exceeded" in message:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(folder, "")) from None


@dataclass
class ParityInput:
    images: np.ndarray  # decoded like predict does
    reference: np.ndarray  # the Keras model's probabilities on them
    source: str
    min_agreement: float


def _export_meta(run_path: str, fmt: ExportFormat, quantize: Quantize | None, size: int, names: list[str],
                 resize: str = "squash") -> dict:
    """export.json: format, input and output spec, labels, source run and versions."""
    return {
        "format": fmt.value,
        "quantize": quantize.value if quantize else None,
        "model": {ExportFormat.keras: files.KERAS_FILE, ExportFormat.savedmodel: files.SAVEDMODEL_DIR,
                  ExportFormat.tflite: files.TFLITE_FILE, ExportFormat.onnx: files.ONNX_FILE}[fmt],
        "image_size": size,
        "resize": resize,
        "compute": "float32",
        "input": {"name": "image", "shape": [None, size, size, 3], "dtype": "float32",
                  "values": f"RGB 0-255, decoded and resized (bilinear, antialiased; {resize}) to image_size x "
                            "image_size"}
        if fmt != ExportFormat.keras else {"name": "image", "shape": [None, None, None, 3], "dtype": "float32",
                                           "values": "RGB 0-255, any size (the Resizing layer is inside)"},
        "output": {"name": "probabilities", "shape": [None, len(names)], "dtype": "float32",
                   "values": "softmax in labels.txt order"},
        "labels": files.LABELS_TXT,
        "class_names": list(names),
        "source_run": os.path.abspath(run_path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": rundir.library_versions(),
    }


def _write_checked(model, run_path: str, tmp: str, meta: dict, representative, check: ParityInput | None,
                   say) -> Parity | None:
    """Convert into tmp and check parity. int8 tries full-integer first; if its top-1 agreement is below
    --min-agreement, dynamic-range int8 (int8 weights, float activations) usually keeps the predictions at the
    same file size. export.json records which. Raises GateFailed when the last try fails the check."""
    fmt, quantize, size = ExportFormat(meta["format"]), meta["quantize"], meta["image_size"]
    modes = list(INT8_MODES) if quantize == "int8" and check is not None else [INT8_MODES[0]]
    started = time.time()
    model_path = os.path.join(tmp, meta["model"])
    sm = os.path.join(tmp, ".saved_model")
    try:
        if fmt == ExportFormat.keras:
            shutil.copyfile(os.path.join(run_path, files.MODEL), model_path)
        elif fmt == ExportFormat.onnx:
            write_onnx(model, size, model_path)
        else:
            write_savedmodel(model, size, model_path if fmt == ExportFormat.savedmodel else sm)
    except Exception as e:
        _disk_full_as_oserror(e, tmp)
        raise
    parity = None
    for mode in modes:
        if fmt == ExportFormat.tflite:
            content = tflite_bytes(sm, quantize, representative, int8_mode=mode)
            fs.write_bytes_atomic(model_path, content)
            if quantize == "int8":
                meta["int8_mode"] = mode
        fs.write_json_atomic(os.path.join(tmp, files.EXPORT_INFO), meta)
        label = f"{fmt.value}{' ' + quantize if quantize else ''}{f' ({mode})' if quantize == 'int8' else ''}"
        say(f"wrote {label} in {time.time() - started:.1f}s")
        if check is None:
            break
        parity = _parity(predictors.load(tmp).predict(check.images), check)
        meta["parity"] = asdict(parity)
        fs.write_json_atomic(os.path.join(tmp, files.EXPORT_INFO), meta)
        if parity.passed:
            break
        if mode != modes[-1]:
            say(f"{label}: top-1 agreement {parity.agreement:.4f} < --min-agreement {check.min_agreement:.4f}; "
                "trying dynamic-range int8 (int8 weights, float activations)")
    if fmt == ExportFormat.tflite:
        fs.remove_tree(sm)
    if parity is not None and not parity.passed:
        # Nothing is installed: a CI job must not ship an export that changes predictions.
        raise GateFailed(
            f"parity check failed: top-1 agreement {parity.agreement:.4f} on {parity.images} images is below "
            f"--min-agreement {check.min_agreement:.4f} (short by {check.min_agreement - parity.agreement:.4f}); "
            f"the export was not written. Try another --quantize or check --data"
        )
    return parity


def _parity(got: np.ndarray, check: ParityInput) -> Parity:
    agreement = float(np.mean(check.reference.argmax(1) == got.argmax(1)))
    return Parity(len(check.images), agreement, float(np.abs(check.reference - got).max()), check.source,
                  check.min_agreement, agreement >= check.min_agreement)
