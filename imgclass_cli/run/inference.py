"""evaluate and predict on top of a run directory: the model, labels and image size travel with the run."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from imgclass_cli import files, fs, precision
from imgclass_cli._tf import inference_fn, tf
from imgclass_cli.config import EvalConfig, OnBadImage, PredictConfig, Resize
from imgclass_cli.data import dataset, folders, tfrecord
from imgclass_cli.errors import EXIT_FAILED, ImgclassError
from imgclass_cli.report import evalfiles, gates
from imgclass_cli.report.metrics import Report, compute_report
from imgclass_cli.run import rundir


@dataclass
class Evaluation:
    report: Report
    paths: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    metrics_file: str | None = None  # where the metrics JSON was written
    files: list[str] = field(default_factory=list)  # misclassified.csv, confusion_matrix.png beside it
    gates: list[gates.GateResult] = field(default_factory=list)  # --fail-under results (enforce() raises on failure)

    def enforce_gates(self) -> None:
        gates.enforce(self.gates)


def predict_probs(model, ds, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) over a finite labelled dataset, in dataset order; progress(done) per batch."""
    ys, ps = [], []
    done = 0
    forward = inference_fn(model)
    for x, y in ds:
        ps.append(forward(x).numpy())
        ys.append(y.numpy())
        done += len(ys[-1])
        if progress is not None:
            progress(done)
    if not ys:
        return np.zeros(0, dtype=int), np.zeros((0, model.output_shape[-1]))
    return np.concatenate(ys), np.concatenate(ps)


def evaluate_run(run_path: str, data_path: str, config: EvalConfig, *, warn=None, stage=None, info=None,
                 fail_under_source: str = "--fail-under") -> Evaluation:
    """`imgclass evaluate`: the metrics of RUN on DATA written to RUN/metrics.json (or config.out) with
    misclassified.csv and confusion_matrix.png beside it, and the --fail-under gates checked."""
    # Gates are parsed before the slow part, so a typo fails in a second, not after the evaluation.
    gate_list = gates.parse(config.fail_under, rundir.read_info(run_path).class_names, fail_under_source) \
        if config.fail_under is not None else []
    target = config.out or os.path.join(run_path, files.METRICS)
    folder = os.path.dirname(os.path.abspath(target))
    check_evaluate_outputs(folder, [target, *evalfiles.names(folder)])
    ev = evaluate(run_path, data_path, config, warn=warn, stage=stage, info=info)
    report = ev.report.to_dict()
    os.makedirs(folder, exist_ok=True)
    fs.write_json_atomic(target, report)
    ev.metrics_file = target
    ev.files = evalfiles.write(folder, ev, title=f"{run_path} on {data_path}")
    fs.record(folder, [ev.metrics_file, *ev.files])  # so a later evaluate may replace them, and nothing else
    ev.gates = gates.check(report, gate_list)
    return ev


def check_evaluate_outputs(folder: str, files: list[str]) -> None:
    """Before the evaluation: the folder is writable, and each file evaluate would replace was written by imgclass
    (listed in the folder's marker). A user's file of the same name is kept."""
    fs.check_writable(folder)
    mine = fs.owned_files(folder) if os.path.isdir(folder) else set()
    for path in files:
        if os.path.lexists(path) and os.path.basename(path) not in mine:
            raise ImgclassError(f"{path}: exists and was not written by imgclass; refusing to overwrite it "
                                "(choose another --out folder or move the file away)")


def _no_stage(description, total=None, unit="images"):
    from contextlib import nullcontext

    return nullcontext(None)


def evaluate(run_path: str, data_path: str, config: EvalConfig, *, warn=None, stage=None, info=None) -> Evaluation:
    """stage(description, total) -> a context manager giving progress(done[, total]) (report.output.Stage).
    info(message): the precision line."""
    from imgclass_cli.data import pipeline, verify

    stage = stage or _no_stage
    run_info = rundir.read_info(run_path)  # labels first: a class mismatch fails before the model loads
    data = dataset.scan_for_eval(data_path, config.split)
    choice = precision.resolve(config.precision)  # a precision this machine lacks fails before the check
    if info is not None:
        info(choice.line())
    resize = run_info.config.resize
    # Every file is decode-checked before the model sees it: a bad file is skipped (named) or stops here. The
    # check keeps the decoded images (when they fit in memory): the evaluation decodes nothing again.
    tf()  # imported before the stage's clock starts: its time and rate are the check's own
    with stage("checking images") as progress:
        data = verify.screen(data, config.on_bad_image, warn or (lambda m: None), progress=progress,
                             image_size=run_info.image_size, resize=resize)
    info = run_info
    known = {name: i for i, name in enumerate(info.class_names)}
    unknown = [c for c in data.class_names if c not in known]
    if unknown:
        raise ImgclassError(
            f"{data.root}: class folder(s) {', '.join(unknown)} are not classes of this model "
            f"({', '.join(info.class_names)}); evaluate only on the classes the model was trained on"
        )
    samples = [dataclasses.replace(s, label=known[data.class_names[s.label]]) for s in data.splits["eval"]]
    model, _ = rundir.load(run_path)
    from imgclass_cli.model.build import apply_precision

    apply_precision(model, choice.policy)
    spec = pipeline.PipelineSpec(info.image_size, config.batch_size, info.config.seed, resize=resize)
    with stage("evaluating", len(samples)) as progress:
        try:
            y, probs = predict_probs(
                model, pipeline.build(samples, spec, training=False, images=data.images.get("eval")), progress)
        except (tf().errors.InvalidArgumentError, tf().errors.DataLossError, tf().errors.FailedPreconditionError) as e:
            raise ImgclassError(f"an image could not be read: {pipeline.read_error_message(e, samples)}") from None
    report = compute_report(
        y, probs, info.class_names,
        extra={"run": os.path.abspath(run_path), "data": tfrecord.absolute(data.root), "split": data.eval_split or "all"},
    )
    return Evaluation(report, [s.path for s in samples], y, probs)


def expand_inputs(args: Iterable[str], stdin: Iterable[str] | None = None) -> Iterator:
    """Paths to predict, in input order: files as given, folders recursively (images only, sorted), '-' = stdin lines.
    A TFRecord prepared folder (local or a URL) gives its records (Samples whose path is the image's name in it)."""
    for arg in args:
        if arg == "-":
            for line in stdin or ():
                line = line.rstrip("\r\n")
                if line:
                    yield from expand_inputs([line])
        elif (tfrecord.is_url(arg) or os.path.isdir(arg)) and dataset.is_tfrecord(arg):
            yield from dataset.records(arg)
        elif os.path.isdir(arg):
            # The same walk as training's scan: ignore rules, content sniffing, symlink loops walked once.
            yield from folders.walk_images(arg, [])
        else:
            yield arg


@dataclass
class PredictJob:
    """A predict command under way: `records` streams one record per input; `note` is what to tell the user first
    (an empty shard); `finish(done, errors)` applies the rules for what was predicted once every record is out."""

    records: Iterator[dict]
    top_k: int
    paths: list[str]
    config: PredictConfig
    note: str | None = None
    precision_line: str | None = None  # what the model computes in, and why (stderr)
    empty_part: bool = False  # --shard I/N with N larger than the inputs: nothing to do, and that is fine

    def finish(self, done: int, errors: int) -> None:
        if self.empty_part:
            return
        if done == 0:
            raise ImgclassError(f"nothing to predict: {' '.join(self.paths)} named no image files (an empty folder or "
                                "empty stdin?); pass image files, folders of images, or - with paths on stdin")
        if errors == done:
            raise ImgclassError(f"nothing predicted: none of the {errors} input(s) could be read (see the warnings)")
        if errors and self.config.strict:
            raise ImgclassError(f"{errors} image(s) could not be read (--strict)", exit_code=EXIT_FAILED)


def start_predict(run_path: str, paths: list[str], config: PredictConfig, stdin=None) -> PredictJob:
    """`imgclass predict`: the inputs expanded (folders, '-' for stdin), sharded with config.shard, and the records
    of predict() over them; with --on-bad-image fail the first unreadable image stops the stream."""
    from imgclass_cli.data.verify import fail_message
    from imgclass_cli.run import predictors

    target = predictors.resolve(run_path)
    k = min(config.top_k, len(target.class_names))
    config = dataclasses.replace(config, top_k=k)
    choice = predict_precision(target, config.precision)
    inputs = expand_inputs(paths, stdin)
    note, empty = None, False
    if config.shard is not None:
        i, n = config.shard
        inputs, total = take_shard(inputs, config.shard)
        if total and not inputs:
            note, empty = (f"--shard {i}/{n}: no inputs in this part ({total} input(s) in all, in parts 1-{total} of "
                           f"{n})"), True
    predictor = predictors.load(run_path, choice.policy)  # a model that cannot run fails before any line
    records = predict(run_path, inputs, config, choice.policy, predictor)
    if config.on_bad_image == OnBadImage.fail:
        records = _stop_at_first_error(records, fail_message)
    return PredictJob(records, k, list(paths), config, note, empty_part=empty, precision_line=choice.line())


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
        if r["status"] != "ok":
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
    """One record per path, in input order: status ok with label/confidence/top_k, or status error with the reason.

    run_path: a run directory, an export directory, a .tflite or .onnx file (see predictors.py); a Keras model
    computes in `policy`. Images are resized the model's way (its --resize). predictor: run_path's, loaded already.
    """
    from imgclass_cli.data import pipeline
    from imgclass_cli.run import predictors

    predictor = predictor or predictors.load(run_path, policy)
    tf()  # imported before the decode threads start (an ONNX or TFLite predictor may not have imported it)
    names = predictor.class_names
    k = max(1, min(config.top_k, len(names)))
    for batch in pipeline.iter_batches(paths, predictor.image_size, config.batch_size,
                                       resize=Resize(predictor.resize)):
        probs = predictor.predict(batch.images) if batch.images is not None else None
        j = 0
        for path, ok, err, extra in zip(batch.paths, batch.ok, batch.errors, batch.extra):
            if not ok:
                yield {"path": path, "status": "error", "error": err, "label": None, "confidence": None, "top_k": [],
                       **extra}
                continue
            p = probs[j]
            j += 1
            order = np.argsort(-p, kind="stable")[:k]
            yield {
                "path": path,
                "status": "ok",
                "error": None,
                "label": names[order[0]],
                "confidence": float(p[order[0]]),
                "top_k": [{"label": names[i], "score": float(p[i])} for i in order],
                **extra,  # a record of a TFRecord folder: its source file and where it is stored
            }
