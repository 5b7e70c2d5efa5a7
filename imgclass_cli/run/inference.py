"""evaluate and predict on top of a run directory: the model, labels and image size travel with the run."""

from __future__ import annotations

import dataclasses
import math
import os
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from imgclass_cli import files, fs, precision
from imgclass_cli._tf import inference_fn, keras, tf
from imgclass_cli.config import (RESIZE_ANTIALIAS, RESIZE_INTERPOLATION, TEMPERATURE_BOUNDS, TTA_CROP, Augment,
                                 EvalConfig, OnBadImage, PredictConfig, Resize)
from imgclass_cli.data import dataset, folders, tfrecord
from imgclass_cli.errors import EXIT_FAILED, ImgclassError
from imgclass_cli.report import calibration, evalfiles, gates
from imgclass_cli.report.metrics import Report, collapse_message, compute_report
from imgclass_cli.run import evalreport, rundir


@dataclass
class Evaluation:
    report: Report
    paths: list[str]
    y_true: np.ndarray
    probs: np.ndarray  # at the run's temperature (calibrated), averaged over the --tta views
    metrics_file: str | None = None  # where the metrics JSON was written
    files: list[str] = field(default_factory=list)  # misclassified.csv, confusion_matrix.png, ... beside it
    gates: list[gates.GateResult] = field(default_factory=list)  # --fail-under/--fail-over results (enforce() raises)
    probs_uncalibrated: np.ndarray | None = None  # the same at T = 1, from the same forward pass
    logits: np.ndarray | None = None  # (views, images, classes): the one forward pass, kept for later outputs

    def enforce_gates(self) -> None:
        gates.enforce(self.gates)


def predict_probs(model, ds, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) over a finite labelled dataset, in dataset order; progress(done) per batch."""
    ys, ps = _forward_all(ds, inference_fn(model), progress)
    if not ys:
        return np.zeros(0, dtype=int), np.zeros((0, model.output_shape[-1]))
    return np.concatenate(ys), np.concatenate(ps)


def _forward_all(ds, forward, progress) -> tuple[list, list]:
    """(labels, outputs) per batch of a finite labelled dataset; progress(images done) after each batch."""
    ys, outs = [], []
    done = 0
    for x, y in ds:
        outs.append(forward(x).numpy())
        ys.append(y.numpy())
        done += len(ys[-1])
        if progress is not None:
            progress(done)
    return ys, outs


def temperature_layer(model):
    """The model's final TemperatureSoftmax, or None (a model saved before imgclass had one)."""
    from imgclass_cli.model.layers import TemperatureSoftmax

    last = model.layers[-1] if model.layers else None
    return last if isinstance(last, TemperatureSoftmax) else None


def _identity(x):
    return x


# One traced logits function per model (without views): the validation pass of every epoch reuses it.
_LOGITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def logits_function(model, views: list | None = None):
    """images -> logits (views, batch, classes) as one traced graph: the model's layers before its final
    TemperatureSoftmax, run in order on each view (every model imgclass builds or trains is such a chain: the
    classifier, and the feature cache's head model). None for a model without a temperature layer."""
    if views is None and model in _LOGITS:
        return _LOGITS[model]
    if temperature_layer(model) is None:
        return None
    K = keras()
    chain = [layer for layer in model.layers[:-1] if not isinstance(layer, K.layers.InputLayer)]
    views = views or [_identity]

    def logits(x):
        for layer in chain:
            x = layer(x, training=False)
        return x

    fn = tf().function(lambda x: tf().stack([logits(view(x)) for view in views]), reduce_retracing=True)
    if len(views) == 1 and views[0] is _identity:
        _LOGITS[model] = fn  # holds the layers, not the model: the model can still go
    return fn


def predict_logits(model, ds, progress=None, views: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, logits of shape (views, images, classes)) over a finite labelled dataset, in dataset order: the one
    forward pass every probability, calibration metric and plot of evaluate is computed from. A model without a
    temperature layer gives log-probabilities (the logits up to a constant per row, which softmax ignores)."""
    forward = logits_function(model, views)
    if forward is None:
        probs_of = inference_fn(model)
        vs = views or [lambda x: x]
        forward = lambda x: tf().math.log(tf().maximum(tf().stack([probs_of(v(x)) for v in vs]), 1e-30))  # noqa: E731
    ys, zs = _forward_all(ds, forward, progress)
    if not ys:
        return np.zeros(0, dtype=int), np.zeros((len(views or [0]), 0, model.output_shape[-1]))
    return np.concatenate(ys), np.concatenate(zs, axis=1)


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities at `temperature` from logits (views, images, classes), averaged over the views."""
    return calibration.softmax(logits, temperature).mean(axis=0)


# ---------------------------------------------------------------- test-time augmentation (--tta)

def tta_views(image_size: int, flip: bool) -> list[tuple[str, object]]:
    """(name, function) of each --tta view of a batch of image_size x image_size images (TensorFlow ops: in a traced
    graph or eager on NumPy): the original, the four corner crops of TTA_CROP of the side resized back with the
    project's one resize, and the horizontal flip when the run trained with flips."""
    c = max(1, round(TTA_CROP * image_size))
    d = image_size - c
    t = tf()

    def crop(oy: int, ox: int):
        return lambda x: t.image.resize(x[:, oy:oy + c, ox:ox + c, :], (image_size, image_size),
                                        method=RESIZE_INTERPOLATION, antialias=RESIZE_ANTIALIAS)

    views = [("original", lambda x: x)]
    if flip:
        views.append(("flip", lambda x: t.reverse(x, axis=[2])))
    views += [("crop_top_left", crop(0, 0)), ("crop_top_right", crop(0, d)), ("crop_bottom_left", crop(d, 0)),
              ("crop_bottom_right", crop(d, d))]
    return views


def flips_for(info) -> bool:
    """A run trained with flips (--augment light or strong) is shown flipped images by --tta."""
    return Augment(info.config.augment) != Augment.none


# ---------------------------------------------------------------- evaluate

def evaluate_run(run_path: str, data_path: str, config: EvalConfig, *, warn=None, stage=None, info=None,
                 fail_under_source: str = "--fail-under", fail_over_source: str = "--fail-over") -> Evaluation:
    """`imgclass evaluate`: the metrics of RUN on DATA written to RUN/metrics.json (or config.out) with
    misclassified.csv, confusion_matrix.png, reliability.png, report.html and mistakes.png beside it, and the gates
    checked."""
    # Gates are parsed before the slow part, so a typo fails in a second, not after the evaluation.
    names = rundir.read_info(run_path).class_names
    gate_list = gates.parse(config.fail_under, names, fail_under_source) if config.fail_under is not None else []
    if config.fail_over is not None:
        gate_list += gates.parse(config.fail_over, names, fail_over_source, maximum=True)
    target = config.out or os.path.join(run_path, files.METRICS)
    folder = os.path.dirname(target) or "."  # as the user gave it: the files are named the same way
    check_evaluate_outputs(folder, [target, *evalfiles.names(folder)])
    ev = evaluate(run_path, data_path, config, warn=warn, stage=stage, info=info)
    report = ev.report.to_dict()
    os.makedirs(folder, exist_ok=True)
    fs.write_json_atomic(target, report)
    ev.metrics_file = target
    ev.files = evalfiles.write(folder, ev, title=f"{run_path} on {data_path}")
    ev.files += evalreport.write(folder, ev, report, run_path, config, f"{run_path} on {data_path}", warn=warn)
    fs.record(folder, [ev.metrics_file, *ev.files])  # so a later evaluate may replace them, and nothing else
    ev.gates = gates.check(report, gate_list)
    return ev


def check_evaluate_outputs(folder: str, files: list[str]) -> None:
    """Before the evaluation: the folder is writable, and each file evaluate would replace was written by imgclass
    (listed in the folder's marker). A user's file of the same name is kept."""
    fs.check_replaceable(folder, files)


def _no_stage(description, total=None, unit="images"):
    from contextlib import nullcontext

    return nullcontext(None)


def _checked_data(data_path: str, config: EvalConfig, info, warn, stage, resize: str):
    """The evaluated images, decode-checked (resized the run's way), with labels in the model's class order."""
    from imgclass_cli.data import verify

    data = dataset.scan_for_eval(data_path, config.split)
    # Every file is decode-checked before the model sees it: a bad file is skipped (named) or stops here. The
    # check keeps the decoded images (when they fit in memory): the evaluation decodes nothing again.
    tf()  # imported before the stage's clock starts: its time and rate are the check's own
    with stage("checking images") as progress:
        data = verify.screen(data, config.on_bad_image, warn, progress=progress, image_size=info.image_size,
                             resize=resize)
    known = {name: i for i, name in enumerate(info.class_names)}
    unknown = [c for c in data.class_names if c not in known]
    if unknown:
        raise ImgclassError(
            f"{data.root}: class folder(s) {', '.join(unknown)} are not classes of this model "
            f"({', '.join(info.class_names)}); evaluate only on the classes the model was trained on"
        )
    samples = [dataclasses.replace(s, label=known[data.class_names[s.label]]) for s in data.splits["eval"]]
    return data, samples


def evaluate(run_path: str, data_path: str, config: EvalConfig, *, warn=None, stage=None, info=None) -> Evaluation:
    """stage(description, total) -> a context manager giving progress(done[, total]) (report.output.Stage);
    warn(message) for what makes the numbers doubtful, info(message) for what the user should know."""
    from imgclass_cli.data import pipeline

    stage, warn, info_ = stage or _no_stage, warn or (lambda m: None), info or (lambda m: None)
    run = rundir.read_info(run_path)  # labels first: a class mismatch fails before the model loads
    choice = precision.resolve(config.precision)  # a precision this machine lacks fails before the check
    info_(choice.line())
    resize = run.config.resize
    data, samples = _checked_data(data_path, config, run, warn, stage, resize)
    if config.split is None and data.eval_split == "val":
        info_(f"{data_path}: no test split; evaluating on its val split (--split chooses)")
    seen = seen_by_run(run, samples)
    model, _ = rundir.load(run_path)
    from imgclass_cli.model.build import apply_precision

    apply_precision(model, choice.policy)
    temperature = run_temperature(model, os.path.join(run_path, files.MODEL))
    views = tta_views(run.image_size, flips_for(run)) if config.tta else [("original", lambda x: x)]
    spec = pipeline.PipelineSpec(run.image_size, config.batch_size, run.config.seed, resize=resize)
    with stage("evaluating" + (f" ({len(views)} views)" if config.tta else ""), len(samples)) as progress:
        try:
            y, logits = predict_logits(
                model, pipeline.build(samples, spec, training=False, images=data.images.get("eval")), progress,
                [v for _, v in views])
        except (tf().errors.InvalidArgumentError, tf().errors.DataLossError, tf().errors.FailedPreconditionError) as e:
            raise ImgclassError(f"an image could not be read: {pipeline.read_error_message(e, samples)}") from None
    probs, raw = calibrated(logits, temperature), calibrated(logits, 1.0)
    extra = {"run": os.path.abspath(run_path), "data": tfrecord.absolute(data.root), "split": data.eval_split or "all",
             "seen_by_run": seen, "tta": [name for name, _ in views] if config.tta else None}
    if config.target_accuracy is not None:
        extra["target"] = calibration.target_threshold(probs, y, config.target_accuracy)
    report = compute_report(y, probs, run.class_names, extra=extra, probs_uncalibrated=raw, temperature=temperature)
    for message in (seen_message(seen), collapse_message(report.prediction_collapse, len(y))):
        if message:
            warn(message)
    return Evaluation(report, [s.path for s in samples], y, probs, probs_uncalibrated=raw, logits=logits)


def run_temperature(model, model_path: str) -> float:
    """The temperature saved in the model (1 for a model without one); a value that is not a positive finite
    number (a tampered file) is refused."""
    layer = temperature_layer(model)
    if layer is None:
        return 1.0
    t = float(layer.temperature.numpy())
    if not (math.isfinite(t) and TEMPERATURE_BOUNDS[0] <= t <= TEMPERATURE_BOUNDS[1] or t == 1.0):
        raise ImgclassError(f"{model_path}: its temperature is {t!r}, outside {TEMPERATURE_BOUNDS[0]:g} to "
                            f"{TEMPERATURE_BOUNDS[1]:g}; not a model imgclass calibrated")
    return t


# ---------------------------------------------------------------- images the run has seen

def file_ids(paths) -> dict[str, tuple[int, int]]:
    """{path: (device, inode)} of the files that exist, from one directory listing per folder (the inode comes with
    each entry: no stat per file, so 60,000 recorded images cost a few listings); a symlink is followed."""
    by_folder: dict[str, set[str]] = {}
    for p in paths:
        by_folder.setdefault(os.path.dirname(p), set()).add(os.path.basename(p))
    found = {}
    for folder, names in by_folder.items():
        try:
            device = os.stat(folder or ".").st_dev
            with os.scandir(folder or ".") as entries:
                for e in entries:
                    if e.name not in names:
                        continue
                    path = f"{folder}{os.sep}{e.name}" if folder else e.name
                    if e.is_symlink():
                        st = os.stat(path)
                        found[path] = (st.st_dev, st.st_ino)
                    else:
                        found[path] = (device, e.inode())
        except OSError:  # a folder or link target that is gone: those files are not there to compare
            continue
    return found


def _recorded(run) -> tuple[dict, dict, int] | None:
    """The run's train and val images from its split.csv under its recorded data root: ({path: split},
    {(device, inode): split}, how many were found on disk); None without a split.csv or data root."""
    import csv

    split_file = os.path.join(run.path, files.SPLIT)
    root = run.extra.get("data")
    if not isinstance(root, str) or not root or not os.path.isfile(split_file):
        return None
    try:
        with open(split_file, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"path", "split"} <= set(reader.fieldnames):
                raise ImgclassError(f"{split_file}: not a split file (expected the columns path,class,split)")
            rows = [(r.get("path"), r.get("split")) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ImgclassError(f"{split_file}: cannot read it ({e})") from None
    url = tfrecord.is_url(root)
    by_path = {}
    for i, (rel, split) in enumerate(rows, start=2):
        if split not in ("train", "val"):
            continue
        if not isinstance(rel, str) or not rel or "\0" in rel:
            raise ImgclassError(f"{split_file}: row {i}: field path is empty or invalid")
        by_path[root.rstrip("/") + "/" + rel if url else os.path.normpath(f"{root}{os.sep}{rel}")] = split
    if url:
        return by_path, {}, len(by_path)
    ids = file_ids(by_path)
    return by_path, {ident: by_path[p] for p, ident in ids.items()}, len(ids)


def seen_by_run(run, samples) -> dict:
    """How many of the evaluated images the run trained or validated on: {"train", "val", "of", "fraction",
    "checked"}. An image counts as seen when it is the same file as one of the run's split.csv (the same device
    and inode: the same path, a symlink, or a hard link such as prepare's links) or, for a record, the same path
    under the recorded data root. A copy with another inode is not recognised. checked is False when the run's
    recorded images are not on disk any more (nothing could be compared)."""
    recorded = _recorded(run)
    counts = {"train": 0, "val": 0}
    if recorded is not None:
        by_path, by_id, _ = recorded
        paths = [s.path if tfrecord.is_url(s.path) else os.path.normpath(os.path.abspath(s.path)) for s in samples]
        ids = file_ids([p for p, s in zip(paths, samples) if s.record is None and p not in by_path]) if by_id else {}
        for p in paths:
            split = by_path.get(p) or by_id.get(ids.get(p))
            if split:
                counts[split] += 1
    n = len(samples)
    return {**counts, "of": n, "fraction": (counts["train"] + counts["val"]) / n if n else 0.0,
            "checked": bool(recorded and recorded[2])}


def seen_message(seen: dict) -> str | None:
    if not seen["checked"]:
        return None
    both = seen["train"] + seen["val"]
    if not both:
        return None
    where = " and ".join(f"{seen[s]} in its {name}" for s, name in (("train", "training split"),
                                                                      ("val", "validation split")) if seen[s])
    return (f"{both} of the {seen['of']} images evaluated were seen by the run ({where}): these metrics are not a "
            "test score (metrics.json seen_by_run; --fail-over seen_by_run.fraction=0 refuses such data)")


def expand_inputs(args: Iterable[str], stdin: Iterable[str] | None = None, skipped: list | None = None) -> Iterator:
    """Paths to predict, in input order: files as given, folders recursively (images only, sorted), '-' = stdin lines.
    A TFRecord prepared folder (local or a URL) gives its records (Samples whose path is the image's name in it).
    skipped: gets (path, reason) of each file a folder held that is not an image."""
    skipped = [] if skipped is None else skipped
    for arg in args:
        if arg == "-":
            for line in stdin or ():
                line = line.rstrip("\r\n")
                if line:
                    yield from expand_inputs([line], skipped=skipped)
        elif (tfrecord.is_url(arg) or os.path.isdir(arg)) and dataset.is_tfrecord(arg):
            yield from dataset.records(arg)
        elif os.path.isdir(arg):
            # The same walk as training's scan: ignore rules, content sniffing, symlink loops walked once.
            yield from folders.walk_images(arg, skipped)
        else:
            yield arg


@dataclass
class PredictJob:
    """A predict command under way: `records` streams one record per input; `note` is what to tell the user first
    (an empty shard); `total` the number of inputs when known before the first is predicted (None with stdin);
    `finish(done, errors)` applies the rules for what was predicted once every record is out."""

    records: Iterator[dict]
    top_k: int
    paths: list[str]
    config: PredictConfig
    note: str | None = None
    precision_line: str | None = None  # what the model computes in, and why (stderr)
    empty_part: bool = False  # --shard I/N with N larger than the inputs: nothing to do, and that is fine
    total: int | None = None
    skipped: list = field(default_factory=list)  # (path, reason): files of the folders that are not images

    def finish(self, done: int, errors: int) -> None:
        if self.empty_part:
            return
        if done == 0:
            raise ImgclassError(nothing_to_predict(self.paths, self.skipped))
        if errors == done:
            raise ImgclassError(f"nothing predicted: none of the {errors} input(s) could be read (see the warnings)")
        if errors and self.config.strict:
            raise ImgclassError(f"{errors} image(s) could not be read (--strict)", exit_code=EXIT_FAILED)


def nothing_to_predict(paths: list[str], skipped: list) -> str:
    """Why there is no image to predict: the folders' files that are not images (how many, and the first's reason),
    or no files at all."""
    named = " ".join(paths)
    files_ = [(p, why) for p, why in skipped if "symlink loop or repeated folder" not in why]
    if files_:
        n = len(files_)
        first, why = files_[0]
        some = "the file is not an image" if n == 1 else f"none of the {n} files is an image"
        return (f"nothing to predict: {named}: {some} ({first}: {why}); imgclass reads JPEG, PNG, GIF and BMP "
                "files")
    return (f"nothing to predict: {named} named no image files (an empty folder or empty stdin?); pass image "
            "files, folders of images, or - with paths on stdin")


def start_predict(run_path: str, paths: list[str], config: PredictConfig, stdin=None) -> PredictJob:
    """`imgclass predict`: the inputs expanded (folders, '-' for stdin), sharded with config.shard, the model loaded,
    and the records of predict() over them; with --on-bad-image fail the first unreadable image stops the stream.

    Everything that can fail on the command's own inputs fails here, before the caller writes anything to stdout:
    the model and its labels are loaded, and inputs without a single image are refused before TensorFlow loads.
    The inputs are listed up front (folders are walked anyway) so progress has a total, except from stdin."""
    from imgclass_cli.data.verify import fail_message
    from imgclass_cli.run import predictors

    target = predictors.resolve(run_path)
    k = min(config.top_k, len(target.class_names))
    config = dataclasses.replace(config, top_k=k)
    choice = predict_precision(target, config.precision)  # a precision this machine lacks fails before any input
    skipped: list = []
    inputs = expand_inputs(paths, stdin, skipped)
    note, empty, total = None, False, None
    if config.shard is not None:
        i, n = config.shard
        inputs, total = take_shard(inputs, config.shard)
        if total and not inputs:
            note, empty = (f"--shard {i}/{n}: no inputs in this part ({total} input(s) in all, in parts 1-{total} of "
                           f"{n})"), True
        total = len(inputs)
    elif "-" not in paths:
        inputs = list(inputs)
        total = len(inputs)
    if total == 0 and not empty:
        raise ImgclassError(nothing_to_predict(list(paths), skipped))
    predictor = predictors.load(run_path, choice.policy)  # a model that cannot run fails before any line
    records = predict(run_path, inputs, config, choice.policy, predictor)
    if config.on_bad_image == OnBadImage.fail:
        records = _stop_at_first_error(records, fail_message)
    return PredictJob(records, k, list(paths), config, note, precision_line=choice.line(), empty_part=empty,
                      total=total, skipped=skipped)


def predict_precision(target, requested) -> precision.Choice:
    """A Keras model computes in the precision asked for (auto: this machine's fastest); an exported SavedModel,
    TFLite or ONNX model computes as it was exported (float32): auto and float32 say so, another is refused."""
    from imgclass_cli.config import Precision

    if target.keras:
        return precision.resolve(requested)
    if Precision(requested) in (Precision.auto, Precision.float32):
        return precision.Choice(Precision(requested).value, precision.FLOAT32,
                                f"the {target.kind} model computes in float32, as it was exported", fixed=True)
    raise ImgclassError(f"--precision {Precision(requested).value}: the {target.kind} model computes in float32, "
                        "as it was exported; the precision applies to run directories and keras exports "
                        "(leave --precision out)")


def _stop_at_first_error(records, fail_message):
    for r in records:
        if r["status"] == "error":
            raise ImgclassError(fail_message(r["path"], r["error"]))
        yield r


def take_shard(items: Iterable, shard: tuple[int, int]) -> tuple[list, int]:
    """(part I of N, number of inputs in all) of the sorted, de-duplicated inputs: the contiguous slice
    [(I-1)*M//N, I*M//N) of the M inputs sorted by path, so parts 1..N, concatenated, are the whole sorted list
    and part sizes differ by at most one. The same path given twice counts once."""
    i, n = shard
    unique = {}
    for item in items:
        unique.setdefault(item if isinstance(item, str) else item.path, item)
    ordered = [unique[k] for k in sorted(unique)]
    m = len(ordered)
    return ordered[(i - 1) * m // n: i * m // n], m


def predict(run_path: str, paths: Iterable[str], config: PredictConfig, policy: str = "float32",
            predictor=None) -> Iterator[dict]:
    """One record per path, in input order: status ok (or unsure: top-1 confidence below --min-confidence) with
    label/confidence/top_k, or status error with the reason.

    run_path: a run directory, an export directory, a .tflite or .onnx file (see predictors.py); a Keras model
    computes in `policy`. Images are resized the model's way (its --resize). predictor: run_path's, loaded already
    (start_predict loads it before the first input is read).
    """
    from imgclass_cli.data import pipeline
    from imgclass_cli.run import predictors

    predictor = predictor if predictor is not None else predictors.load(run_path, policy)
    tf()  # imported before the decode threads start (an ONNX or TFLite predictor may not have imported it)
    if getattr(predictor, "model", None) is not None:  # a run or a .keras export: its temperature is a weight we read
        target = predictors.resolve(run_path)
        run_temperature(predictor.model, os.path.join(target.path, files.MODEL) if target.kind == "run" else target.path)
    names = predictor.class_names
    k = max(1, min(config.top_k, len(names)))
    views = _predict_views(run_path, predictor.image_size) if config.tta else None
    for batch in pipeline.iter_batches(paths, predictor.image_size, config.batch_size,
                                       resize=Resize(predictor.resize)):
        probs = _predicted(predictor, batch.images, views) if batch.images is not None else None
        j = 0
        for path, ok, err, extra in zip(batch.paths, batch.ok, batch.errors, batch.extra):
            if not ok:
                yield {"path": path, "status": "error", "error": err, "label": None, "confidence": None, "top_k": [],
                       **extra}
                continue
            p = probs[j]
            j += 1
            order = np.argsort(-p, kind="stable")[:k]
            confidence = float(p[order[0]])
            unsure = config.min_confidence is not None and confidence < config.min_confidence
            yield {
                "path": path,
                "status": "unsure" if unsure else "ok",
                "error": None,
                "label": names[order[0]],
                "confidence": confidence,
                "top_k": [{"label": names[i], "score": float(p[i])} for i in order],
                **extra,  # a record of a TFRecord folder: its source file and where it is stored
            }


def _predict_views(run_path: str, image_size: int) -> list:
    """--tta views for predict: with the flip for a run trained with flips; crops only for an export (its training
    augmentation is not recorded)."""
    from imgclass_cli.run import predictors

    flip = predictors.resolve(run_path).kind == "run" and flips_for(rundir.read_info(run_path))
    return [fn for _, fn in tta_views(image_size, flip)]


def _predicted(predictor, images: np.ndarray, views: list | None) -> np.ndarray:
    """The predictor's (calibrated) probabilities, averaged over the --tta views."""
    if not views:
        return predictor.predict(images)
    x = tf().constant(images)
    return np.mean([predictor.predict(np.asarray(view(x), dtype=np.float32)) for view in views], axis=0)
