"""The Typer app: parse options, call the core, print. No TensorFlow at import time."""

from __future__ import annotations

import dataclasses
import functools
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from imgclass_cli import __version__
from imgclass_cli.config import (
    AUTO_BATCH,
    AUTO_BATCH_STEPS,
    AUTO_EPOCHS,
    AUTO_EPOCHS_IMAGES,
    AUTO_LR,
    AUTO_LR_BATCH,
    DEFAULT_SCRATCH_IMAGE_SIZE,
    EVAL_DEFAULTS,
    EXPORT_DEFAULTS,
    FINETUNE_DEFAULTS,
    MIN_IMAGE_SIZE,
    PREDICT_DEFAULTS,
    PREPARE_DEFAULTS,
    TRAIN_DEFAULTS,
    Augment,
    BackbonesFormat,
    ClassWeight,
    EvalConfig,
    EvalFormat,
    Example,
    ExampleConfig,
    ExportConfig,
    ExportFormat,
    OnBadImage,
    PredictConfig,
    PredictFormat,
    PrepareConfig,
    PrepareFormat,
    Quantize,
    Strategy,
    TrainConfig,
    auto_learning_rate,
)
from imgclass_cli.errors import EXIT_FAILED, ImgclassError, first_line

def _shown(value) -> str:
    """A value the user typed, as a shell would take it back: 1.5, abc, 'a b', ''."""
    text = str(value)
    return shlex.quote(text) if text.isprintable() else repr(text)


def _expected(param, error: dict) -> str:
    """What `param` accepts, in words: the choices, the range, or the type (no Python list repr)."""
    desc = param.type_descriptor
    if desc.is_choice:
        return "one of " + ", ".join(str(getattr(c, "value", c)) for c in desc.choices)
    lo, hi = getattr(param, "min", None), getattr(param, "max", None)
    if error.get("type", "").startswith(("greater_than", "less_than")) and (lo is not None or hi is not None):
        return f"between {lo} and {hi}" if lo is not None and hi is not None else \
            f"at least {lo}" if lo is not None else f"at most {hi}"
    kind = {int: "an integer", float: "a number", bool: "one of 1, 0, true, false, yes, no, on, off"}
    return kind.get(desc.annotation, error.get("msg", "a valid value"))


def _env_source(ctx, param) -> str | None:
    """The environment variable that set `param`'s value, or None when it came from the command line or a default."""
    source = ctx.get_parameter_source(param.name)
    if source is None or source.name != "ENVIRONMENT":
        return None
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
    return next((n for n in names if os.environ.get(n)), names[0] if names else None)


def _clear_bad_parameter(e: typer.BadParameter, ctx) -> typer.BadParameter:
    """A value Typer refused (a type, range or choice check), as one line that says what is accepted and echoes the
    bad value: `Invalid value for '--val': must be between 0.0 and 0.9; got 1.5`. A value from an environment
    variable names that variable and the option it sets (Click's own hint shows a list of names as a Python list)."""
    param = e.param
    if param is None or param.param_type_name != "option" or type(e) is not typer.BadParameter:
        return e  # a missing argument, or an argument's own message
    errors = getattr(e.__cause__, "errors", None)  # Typer checks values with pydantic
    message = e.message
    if callable(errors) and errors():
        error = errors()[0]
        message = f"must be {_expected(param, error)}; got {_shown(error.get('input'))}"
    env = _env_source(ctx, param)
    hint = f"environment variable {env} (sets {param.opts[0]})" if env else " / ".join(f"'{o}'" for o in param.opts)
    return typer.BadParameter(message, ctx=ctx, param=param, param_hint=hint)


def _source_name(ctx, name: str) -> str:
    """How messages name where an option's value came from: `--fail-under`, or `IMGCLASS_FAIL_UNDER (--fail-under)`."""
    param = next(p for p in ctx.command.params if p.name == name)
    env = _env_source(ctx, param)
    return f"{env} ({param.opts[0]})" if env else param.opts[0]


def _checked_by(check):
    """An option callback that runs `check(value)` while the command line is parsed: a bad value is then a usage
    error like Typer's own, naming the environment variable when one set it."""

    def callback(value):
        if value is not None:
            try:
                check(value)
            except ImgclassError as e:
                raise typer.BadParameter(e.message) from None
        return value

    return callback


def _backbone(name: str):
    from imgclass_cli.model.backbones import get_backbone

    return get_backbone(name)


def _metavar(param) -> str | None:
    """The placeholder of an option's value in help: its choices [a|b], else a word in capitals (N, PATH...)."""
    desc = param.type_descriptor
    if desc.is_choice:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices) + "]"
    if desc.is_path:
        return "PATH"
    return {int: "N", float: "NUMBER"}.get(desc.annotation, "TEXT")


class _Command(TyperCommand):
    """One style of usage line, help and value errors for every command: `imgclass predict [OPTIONS] RUN PATH...`
    (arguments by their capitalised metavar, optional ones in [ ]), option values as N, PATH or [a|b], and
    _clear_bad_parameter's messages."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for p in self.params:
            if p.param_type_name == "option" and p.metavar is None and not p.is_flag:
                p.metavar = _metavar(p)

    @staticmethod
    def _argument_name(p) -> str:
        return (p.metavar or p.name.upper()) + ("..." if p.nargs != 1 else "")

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if p.param_type_name == "argument":
                name = self._argument_name(p)
                pieces.append(name if p.required else f"[{name}]")
        return pieces

    def format_options(self, ctx, formatter) -> None:
        args = [(self._argument_name(p), p.help or "") for p in self.get_params(ctx)
                if p.param_type_name == "argument" and not p.hidden]
        opts = [r for p in self.get_params(ctx) if p.param_type_name == "option" and (r := p.get_help_record(ctx))]
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as e:
            raise _clear_bad_parameter(e, ctx) from None


class _Group(TyperGroup):
    def parse_args(self, ctx, args):  # the global options (--debug, IMGCLASS_DEBUG)
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as e:
            raise _clear_bad_parameter(e, ctx) from None


app = typer.Typer(
    cls=_Group,
    help="Turn a folder of images (one sub-folder per class) into a trained, evaluated image classifier.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
command = functools.partial(app.command, cls=_Command)
_state = {"debug": False}


def _version(value: bool):
    if value:
        typer.echo(f"imgclass {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks and TensorFlow logs.", envvar="IMGCLASS_DEBUG")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
):
    """Exit codes: 0 ok, 1 job failed, 2 usage or input error, 3 --fail-under gate failed, 130 interrupted (SIGINT),
    143 terminated (SIGTERM)."""
    _state["debug"] = debug
    from imgclass_cli._tf import set_debug

    set_debug(debug)


def handle_errors(fn):
    """Turn project errors into one red line on stderr and a documented exit code; SIGINT and SIGTERM become
    exit 130 and 143 (interrupts.handled), acted on at safe points while a file or checkpoint is written."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from imgclass_cli import interrupts
        from imgclass_cli.fs import NO_SPACE, WriteFailed
        from imgclass_cli.report import output

        try:
            with interrupts.handled():
                return fn(*args, **kwargs)
        except ImgclassError as e:
            if _state["debug"]:
                raise
            output.error(e.message)
            raise typer.Exit(e.exit_code) from None
        except BrokenPipeError:
            # The reader of stdout went away (e.g. `| head`): stop quietly, like other Unix tools.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except KeyboardInterrupt as e:
            output.error(f"interrupted ({interrupts.signal_name(e)})")
            raise typer.Exit(interrupts.exit_code(e)) from None
        except typer.Exit:
            raise
        except Exception as e:  # an unexpected failure: one line, traceback with --debug
            if _state["debug"]:
                raise
            if isinstance(e, OSError) and e.errno in NO_SPACE:  # a write no core function wrapped: still say where
                output.error(WriteFailed(os.path.dirname(os.path.abspath(str(e.filename or "."))), e).message)
                raise typer.Exit(EXIT_FAILED) from None
            first = first_line(e)
            output.error(f"unexpected {type(e).__name__}: {first} (run `imgclass --debug ...` for the traceback)")
            raise typer.Exit(EXIT_FAILED) from None

    return wrapper


# Options shared by train and finetune. Defaults come from config.py.
# str, not Path: a URL (gs://bucket/data, a TFRecord prepared folder) must keep its double slash.
DataArg = Annotated[str, typer.Argument(metavar="DATA", help="Folder of class sub-folders, or with train/ [val/] [test/] inside, or a prepared folder (also a TFRecord one, local or gs://...).", show_default=False)]
ImageSizeOpt = Annotated[Optional[int], typer.Option("--image-size", min=MIN_IMAGE_SIZE, envvar="IMGCLASS_IMAGE_SIZE", help=f"Square input size in pixels [default: with --weights RUN that run's size; else the backbone's own size; scratch CNNs: the images' own size when below {DEFAULT_SCRATCH_IMAGE_SIZE}, else {DEFAULT_SCRATCH_IMAGE_SIZE}].", show_default=False)]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, envvar="IMGCLASS_BATCH_SIZE", help="Images per batch.")]
LrOpt = Annotated[float, typer.Option("--learning-rate", "--lr", min=0.0, help="Adam learning rate.")]
TrainLrOpt = Annotated[float | None, typer.Option("--learning-rate", "--lr", min=0.0, help="Adam learning rate.", show_default=f"{AUTO_LR:g} x batch size / {AUTO_LR_BATCH}: {AUTO_LR:g} at {AUTO_LR_BATCH}, {auto_learning_rate(16):g} at 16")]
AugOpt = Annotated[Augment, typer.Option("--augment", help="Augmentation of training batches.")]
ValOpt = Annotated[float, typer.Option("--val", min=0.0, max=0.9, help="Validation fraction when there is no val/ folder (stratified, seeded; prepare's --val).")]
# Old spellings, kept one release as hidden aliases.
OldValOpt = Annotated[Optional[float], typer.Option("--val-split", min=0.0, max=0.9, hidden=True)]
DropOpt = Annotated[float, typer.Option("--dropout", min=0.0, max=0.95, help="Dropout before the classifier.")]
SeedOpt = Annotated[int, typer.Option("--seed", envvar="IMGCLASS_SEED", help="Seed for the split, shuffling, augmentation and initialisation.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory [default: runs/COMMAND-TIMESTAMP].", show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing run directory.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", envvar="IMGCLASS_QUIET", help="No progress on stderr.")]
TensorboardOpt = Annotated[bool, typer.Option("--tensorboard", envvar="IMGCLASS_TENSORBOARD", help="Write TensorBoard logs (RUN/tensorboard when done).")]
BadImageOpt = Annotated[OnBadImage, typer.Option("--on-bad-image", envvar="IMGCLASS_ON_BAD_IMAGE", help="An unreadable, corrupt, tiny or oversized image: skip it with a warning naming the file, or fail at once (exit 2).")]
# Training quality and fine-tuning (issue 4); defaults from config.py.
WdOpt = Annotated[float, typer.Option("--weight-decay", min=0.0, help="Decoupled weight decay (AdamW) on kernels; 0 = plain Adam.")]
SmoothOpt = Annotated[float, typer.Option("--label-smoothing", min=0.0, max=0.5, help="Label smoothing of the cross-entropy.")]
WarmupOpt = Annotated[float, typer.Option("--warmup-epochs", min=0.0, help="Linear learning-rate warm-up before the cosine decay.")]
ClassWeightOpt = Annotated[ClassWeight, typer.Option("--class-weight", help="auto: weight classes n/(k*count) (balanced) for imbalanced folders.")]
PatienceOpt = Annotated[int, typer.Option("--patience", min=0, help="Stop after this many epochs without a better val loss and keep the best weights; 0 = off.")]
StrategyOpt = Annotated[Strategy, typer.Option("--strategy", envvar="IMGCLASS_STRATEGY", help="auto: multiworker when TF_CONFIG names a cluster, mirrored with more than one GPU, else default. --batch-size stays the global batch (README: Scaling out).")]
ResumeOpt = Annotated[Optional[Path], typer.Option("--resume", help="Continue an interrupted run (its --out folder) with its saved options.", show_default=False)]


def _config(command: str, options: dict) -> TrainConfig:
    """Every option of train/finetune maps to the TrainConfig field of the same name (paths as strings)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: str(v) if isinstance(v, Path) else v for k, v in options.items() if k in names}
    return TrainConfig(command=command, **values)


def _train(cfg: TrainConfig, force: bool, quiet: bool, tensorboard: bool = False) -> None:
    from imgclass_cli.run import preflight

    # Mistakes that need no data fail here, in a second: before TensorFlow is imported (training.run checks
    # again, and gives the warnings).
    preflight.check_train(cfg, force)
    from imgclass_cli.report import output, plots
    from imgclass_cli.run import rundir, training

    reporter = output.StderrReporter(quiet=quiet)
    callbacks, logdir = [], None
    if tensorboard:
        if cfg.resume and not cfg.out:
            from imgclass_cli.run import checkpoints

            cfg.out = checkpoints.find_checkpoint(cfg.resume)[1]
        cfg.out = cfg.out or rundir.default_out(cfg.command)
        logdir = plots.tensorboard_logdir(cfg.out)
        callbacks.append(plots.tensorboard_callback(logdir))
        reporter.info(f"TensorBoard logs in {logdir} (tensorboard --logdir {os.path.dirname(logdir)})")
    result = training.run(cfg, reporter, force=force, callbacks=callbacks)
    if logdir and result.saved:  # another worker's logdir is the chief's: leave it to the chief
        plots.move_tensorboard_logs(logdir, result.out)
    output.print_train_summary(result, quiet)
    reporter.info(output.timings_line(result.timings))
    reporter.info(f"saved {result.out}" if result.saved else f"done; the chief saves the run in {result.out}")


@command()
@handle_errors
def train(
    data: DataArg,
    arch: Annotated[str, typer.Option("--arch", help="cnn (BatchNorm CNN), simple-cnn (the classic 3-conv net), or any backbone name trained from scratch.")] = TRAIN_DEFAULTS.arch,
    weights: Annotated[str, typer.Option("--weights", help="none, imagenet, or a weights file (backbone --arch only).")] = TRAIN_DEFAULTS.weights,
    image_size: ImageSizeOpt = TRAIN_DEFAULTS.image_size,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, envvar="IMGCLASS_EPOCHS", help="Training epochs.", show_default=f"{AUTO_EPOCHS[1]}, fewer on large sets: about {AUTO_EPOCHS_IMAGES:,} images, at least {AUTO_EPOCHS[0]} epochs")] = TRAIN_DEFAULTS.epochs,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, envvar="IMGCLASS_BATCH_SIZE", help="Images per batch.", show_default=f"{max(AUTO_BATCH)}, smaller when an epoch would have fewer than {AUTO_BATCH_STEPS} steps, down to {min(AUTO_BATCH)}")] = TRAIN_DEFAULTS.batch_size,
    learning_rate: TrainLrOpt = TRAIN_DEFAULTS.learning_rate,
    augment: AugOpt = TRAIN_DEFAULTS.augment,
    val_split: ValOpt = TRAIN_DEFAULTS.val_split,
    val_split_alias: OldValOpt = None,
    dropout: DropOpt = TRAIN_DEFAULTS.dropout,
    seed: SeedOpt = TRAIN_DEFAULTS.seed,
    out: OutOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    on_bad_image: BadImageOpt = TRAIN_DEFAULTS.on_bad_image,
    tensorboard: TensorboardOpt = False,
    weight_decay: WdOpt = TRAIN_DEFAULTS.weight_decay,
    label_smoothing: SmoothOpt = TRAIN_DEFAULTS.label_smoothing,
    warmup_epochs: WarmupOpt = TRAIN_DEFAULTS.warmup_epochs,
    class_weight: ClassWeightOpt = TRAIN_DEFAULTS.class_weight,
    patience: PatienceOpt = TRAIN_DEFAULTS.patience,
    resume: ResumeOpt = None,
    strategy: StrategyOpt = TRAIN_DEFAULTS.strategy,
):
    """Train a classifier from scratch on DATA."""
    from imgclass_cli.model.backbones import train_arch

    val_split = val_split if val_split_alias is None else val_split_alias
    cfg = _config("train", {**locals(), "arch": train_arch(arch)})
    _train(cfg, force, quiet, tensorboard)


@command()
@handle_errors
def finetune(
    data: DataArg,
    backbone: Annotated[str, typer.Option("--backbone", "-b", envvar="IMGCLASS_BACKBONE", callback=_checked_by(_backbone), help="Keras Applications backbone (see `imgclass backbones`); with --weights RUN, that run's network.")] = FINETUNE_DEFAULTS.arch,
    weights: Annotated[str, typer.Option("--weights", help="imagenet (download or Keras cache), a local weights file, or RUN: the --out folder of an earlier train or finetune run (any architecture; its network up to the pooling layer is the backbone). none: a random frozen backbone, useful only with --unfreeze.")] = FINETUNE_DEFAULTS.weights,
    image_size: ImageSizeOpt = FINETUNE_DEFAULTS.image_size,
    epochs: Annotated[int, typer.Option("--epochs", min=1, envvar="IMGCLASS_EPOCHS", help="Epochs training the head on the frozen backbone.")] = FINETUNE_DEFAULTS.epochs,
    batch_size: BatchOpt = FINETUNE_DEFAULTS.batch_size,
    learning_rate: LrOpt = FINETUNE_DEFAULTS.learning_rate,
    augment: AugOpt = FINETUNE_DEFAULTS.augment,
    val_split: ValOpt = FINETUNE_DEFAULTS.val_split,
    val_split_alias: OldValOpt = None,
    dropout: DropOpt = FINETUNE_DEFAULTS.dropout,
    seed: SeedOpt = FINETUNE_DEFAULTS.seed,
    out: OutOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    on_bad_image: BadImageOpt = FINETUNE_DEFAULTS.on_bad_image,
    tensorboard: TensorboardOpt = False,
    unfreeze: Annotated[int, typer.Option("--unfreeze", min=0, help="Phase 2: also train the top N backbone layers, counted as Keras lists them (BatchNorm layers among them stay frozen; layers without weights have nothing to train).")] = FINETUNE_DEFAULTS.unfreeze,
    unfreeze_from: Annotated[Optional[str], typer.Option("--unfreeze-from", help="Phase 2: train every backbone layer from this one (a Keras layer name) up.", show_default=False)] = FINETUNE_DEFAULTS.unfreeze_from,
    finetune_epochs: Annotated[int, typer.Option("--finetune-epochs", min=0, help="Epochs of phase 2 (with --unfreeze/--unfreeze-from).")] = FINETUNE_DEFAULTS.finetune_epochs,
    finetune_lr_scale: Annotated[float, typer.Option("--finetune-lr-scale", min=0.0, help="Phase 2 learning rate = --learning-rate times this.")] = FINETUNE_DEFAULTS.finetune_lr_scale,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Run the frozen backbone once and train on its cached outputs (exact; much faster).")] = FINETUNE_DEFAULTS.cache,
    aug_views: Annotated[int, typer.Option("--aug-views", min=1, help="With --augment and the cache: augmented views cached per image.")] = FINETUNE_DEFAULTS.aug_views,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Folder for a feature cache too big for memory [default: beside --out].", show_default=False)] = None,
    weight_decay: WdOpt = FINETUNE_DEFAULTS.weight_decay,
    label_smoothing: SmoothOpt = FINETUNE_DEFAULTS.label_smoothing,
    warmup_epochs: WarmupOpt = FINETUNE_DEFAULTS.warmup_epochs,
    class_weight: ClassWeightOpt = FINETUNE_DEFAULTS.class_weight,
    patience: PatienceOpt = FINETUNE_DEFAULTS.patience,
    resume: ResumeOpt = None,
    strategy: StrategyOpt = FINETUNE_DEFAULTS.strategy,
):
    """Fine-tune a pretrained backbone with a new softmax head on DATA: the head on the frozen backbone (cached
    features), then with --unfreeze the top of the backbone at a lower learning rate."""
    from imgclass_cli.model.backbones import get_backbone

    val_split = val_split if val_split_alias is None else val_split_alias
    cfg = _config("finetune", {**locals(), "arch": get_backbone(backbone).name})
    _train(cfg, force, quiet, tensorboard)


# --format is always the format of what goes to stdout (config.OutputFormat); each command takes the names that
# make sense for its output.
FORMAT_HELP = "Format of stdout: table for people, json/jsonl/csv for programs."

RunArg = Annotated[Path, typer.Argument(metavar="RUN", help="Run directory written by train or finetune.", show_default=False)]


@command()
@handle_errors
def evaluate(
    run: RunArg,
    data: Annotated[str, typer.Argument(metavar="DATA", help="Folder of class sub-folders (or train/val/test: see --split), or a prepared folder (also a TFRecord one, local or gs://...).", show_default=False)],
    split: Annotated[Optional[str], typer.Option("--split", help="For a train/val/test folder: which split [default: test, else val].", show_default=False)] = EVAL_DEFAULTS.split,
    fmt: Annotated[EvalFormat, typer.Option("--format", "-f", envvar=["IMGCLASS_EVALUATE_FORMAT", "IMGCLASS_FORMAT"], help=f"{FORMAT_HELP} csv: one metric per row.")] = EVAL_DEFAULTS.format,
    output_file: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the metrics JSON here instead of RUN/metrics.json; misclassified.csv and confusion_matrix.png go beside it.", show_default=False)] = None,
    output_alias: Annotated[Optional[Path], typer.Option("--output", hidden=True)] = None,
    fail_under: Annotated[Optional[str], typer.Option("--fail-under", envvar="IMGCLASS_FAIL_UNDER", metavar="METRIC=MIN,...", help="Exit 3 if a metric is below its threshold, e.g. accuracy=0.9,f1_macro=0.85 (any metrics.json key: top_k_accuracy.top_3, per_class.NAME.recall).", show_default=False)] = None,
    batch_size: BatchOpt = EVAL_DEFAULTS.batch_size,
    quiet: QuietOpt = False,
    on_bad_image: BadImageOpt = EVAL_DEFAULTS.on_bad_image,
    ctx: typer.Context = None,
):
    """Accuracy, precision, recall, F1, per-class metrics and the confusion matrix of RUN on DATA."""
    from imgclass_cli.report import output
    from imgclass_cli.run import inference

    output_file = output_file or output_alias
    config = EvalConfig(batch_size=batch_size, format=fmt, split=split, on_bad_image=on_bad_image)
    reporter = output.StderrReporter(quiet=quiet)
    ev = inference.evaluate_run(str(run), str(data), config, output=str(output_file) if output_file else None,
                                fail_under=fail_under, warn=reporter.warn, stage=reporter.stage,
                                fail_under_source=_source_name(ctx, "fail_under"))
    report = ev.report.to_dict()
    used = f" ({report['split']} split)" if report.get("split") not in (None, "all") else ""
    output.print_report(report, fmt.value, title=f"{run} on {data}{used}")
    if not quiet:
        for path in [ev.metrics_file, *ev.files]:
            output.say(output.stderr(), f"wrote {path}")
        if ev.gates:
            output.print_gates(ev.gates)
    ev.enforce_gates()


@command()
@handle_errors
def predict(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory, export directory (imgclass export) or .tflite file.", show_default=False)],
    paths: Annotated[list[str], typer.Argument(metavar="PATH", help="Image files, folders (recursive), or - to read paths from stdin.", show_default=False)],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, envvar="IMGCLASS_TOP_K", help="Classes to report per image.")] = PREDICT_DEFAULTS.top_k,
    fmt: Annotated[PredictFormat, typer.Option("--format", "-f", envvar=["IMGCLASS_PREDICT_FORMAT", "IMGCLASS_FORMAT"], help=f"{FORMAT_HELP} jsonl and csv: one record per image, in input order, as it is predicted.")] = PREDICT_DEFAULTS.format,
    batch_size: BatchOpt = PREDICT_DEFAULTS.batch_size,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 if any image could not be read.")] = PREDICT_DEFAULTS.strict,
    on_bad_image: BadImageOpt = PREDICT_DEFAULTS.on_bad_image,
    quiet: QuietOpt = False,
    shard: Annotated[Optional[str], typer.Option("--shard", metavar="I/N", help="Predict only part I of N (1-based) of the inputs sorted by path, duplicates removed; the N parts together are every input once (CI matrix, job arrays).", show_default=False)] = None,
):
    """Predict the class of images with RUN; one record per image, in input order (with --shard: in path order)."""
    from imgclass_cli.report import output
    from imgclass_cli.run import inference, predictors

    part = None
    if shard is not None:
        from imgclass_cli.run.preflight import parse_shard

        part = parse_shard(shard)
    k = min(top_k, len(predictors.resolve(str(run)).class_names))
    config = PredictConfig(top_k=k, batch_size=batch_size, format=fmt, strict=strict, on_bad_image=on_bad_image)
    inputs = inference.expand_inputs(paths, sys.stdin)
    empty_part = False
    if part is not None:
        inputs, total = inference.take_shard(inputs, part)
        if total and not inputs:  # N larger than the inputs: this job has nothing to do, and that is fine
            empty_part = True
            if not quiet:
                output.say(output.stderr(), f"--shard {part[0]}/{part[1]}: no inputs in this part ({total} input(s) "
                                            f"in all, in parts 1-{total} of {part[1]})")
    records = inference.predict(str(run), inputs, config)
    reporter = output.StderrReporter()
    if on_bad_image == OnBadImage.fail:
        from imgclass_cli.data.verify import fail_message

        records = _stop_at_first_error(records, fail_message)
    con = reporter.console
    # Streamed records on a terminal are their own progress; a live bar would be drawn through them.
    live = con.is_terminal and (fmt == PredictFormat.table or not sys.stdout.isatty())
    with output.Stage("predicting", quiet=quiet, live=live, console=con) as progress:
        # Warnings through the bar's console land above the bar; the table is printed after the bar is gone.
        errors = output.write_predictions(
            _counted(records, progress), fmt.value, k,
            on_error=lambda r: reporter.warn(f"{r['path']}: {r['error']}"),
        )
    if progress.done == 0 and not empty_part:
        raise ImgclassError(f"nothing to predict: {' '.join(paths)} named no image files (an empty folder or "
                            "empty stdin?); pass image files, folders of images, or - with paths on stdin")
    if errors == progress.done and not empty_part:
        raise ImgclassError(f"nothing predicted: none of the {errors} input(s) could be read (see the warnings)")
    if errors and strict:
        raise ImgclassError(f"{errors} image(s) could not be read (--strict)", exit_code=EXIT_FAILED)


def _counted(records, progress):
    for r in records:
        progress.advance()
        yield r
    progress.close()


def _stop_at_first_error(records, fail_message):
    for r in records:
        if r["status"] != "ok":
            raise ImgclassError(fail_message(r["path"], r["error"]))
        yield r


@command("export")
@handle_errors
def export_(
    run: RunArg,
    to: Annotated[ExportFormat, typer.Option("--to", help="The model file format: savedmodel (TF Serving), tflite (mobile, edge) or keras.")] = EXPORT_DEFAULTS.format,
    to_alias: Annotated[Optional[ExportFormat], typer.Option("--format", "-f", hidden=True)] = None,
    quantize: Annotated[Optional[Quantize], typer.Option("--quantize", help="tflite only: float16 (half size), int8 (full-integer, calibrated on the run's training images).", show_default=False)] = EXPORT_DEFAULTS.quantize,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Export directory [default: RUN/export/TO[-QUANTIZE], e.g. RUN/export/tflite-int8].", show_default=False)] = None,
    parity: Annotated[int, typer.Option("--parity", min=0, metavar="N", help="Compare top-1 of the export and the Keras model on N images (0: skip).")] = EXPORT_DEFAULTS.parity,
    min_agreement: Annotated[float, typer.Option("--min-agreement", min=0.0, max=1.0, help="Fail (exit 3, nothing written) below this top-1 agreement.")] = EXPORT_DEFAULTS.min_agreement,
    data: Annotated[Optional[Path], typer.Option("--data", help="Images for the parity check and int8 calibration [default: the run's recorded val and train images].", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing export directory (one written by imgclass export; never any other folder).")] = False,
    quiet: QuietOpt = False,
):
    """Export RUN's model as a SavedModel, TFLite or .keras file with its labels, checked against the Keras model."""
    from imgclass_cli.report import output
    from imgclass_cli.run import export

    reporter = output.StderrReporter(quiet=quiet)
    if to_alias is not None:  # the old spelling, kept one release: --format now always means the format of stdout
        reporter.warn(f"export --format is now --to (--to {to_alias.value}); --format will be removed in the next release")
        to = to_alias
    config = ExportConfig(format=to, quantize=quantize, parity=parity, min_agreement=min_agreement)
    result = export.export(str(run), config, out=str(out) if out else None, force=force,
                           data=str(data) if data else None, reporter=reporter)
    output.print_export(result)


@command()
@handle_errors
def prepare(
    src: Annotated[Path, typer.Argument(metavar="SRC", help="The image folder to check and split (class folders, or train/val/test of class folders); with --example or --from-tfds: OUT.", show_default=False)],
    out: Annotated[Optional[Path], typer.Argument(metavar="OUT", help="Folder to write: class folders of links, manifest.csv, prepare.json.", show_default=False)] = None,
    val: Annotated[Optional[float], typer.Option("--val", min=0.0, max=0.9, help="Validation fraction per class [default: 0.1; an existing val/ folder is kept].", show_default=False)] = PREPARE_DEFAULTS.val,
    test: Annotated[Optional[float], typer.Option("--test", min=0.0, max=0.9, help="Test fraction per class [default: 0.1; an existing test/ folder is kept].", show_default=False)] = PREPARE_DEFAULTS.test,
    seed: Annotated[int, typer.Option("--seed", envvar="IMGCLASS_SEED", help="Seed for the stratified split (and the example dataset's test split).")] = PREPARE_DEFAULTS.seed,
    copy: Annotated[bool, typer.Option("--copy", help="Copy files instead of hardlinking them (copies where hardlinks fail).")] = PREPARE_DEFAULTS.copy,
    max_size: Annotated[Optional[int], typer.Option("--max-size", min=MIN_IMAGE_SIZE, metavar="N", help="Write downscaled copies (longer side N, aspect kept, EXIF orientation applied) of larger images.", show_default=False)] = PREPARE_DEFAULTS.max_size,
    fmt: Annotated[PrepareFormat, typer.Option("--format", "-f", help=FORMAT_HELP)] = PREPARE_DEFAULTS.format,
    tfrecord: Annotated[bool, typer.Option("--tfrecord", help="Write the images as TFRecord shards (encoded bytes, label, source path) plus the manifest, instead of class folders of links.")] = PREPARE_DEFAULTS.tfrecord,
    shard_size: Annotated[str, typer.Option("--shard-size", metavar="SIZE", help="With --tfrecord: about this many bytes of images per shard (KB, MB, GB; KiB, MiB, GiB).")] = f"{PREPARE_DEFAULTS.shard_size // 10**6}MB",
    example: Annotated[Optional[Example], typer.Option("--example", help="Write an embedded example dataset to OUT (digits: scikit-learn's 1,797 real 8x8 digits).", show_default=False)] = None,
    from_tfds: Annotated[Optional[str], typer.Option("--from-tfds", metavar="NAME[:SPLIT]", help="Export a tensorflow-datasets image classification dataset to OUT as class folders.", show_default=False)] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="tensorflow-datasets data folder [default: ~/tensorflow_datasets].", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an OUT written by an earlier prepare (never any other folder).")] = False,
    quiet: QuietOpt = False,
):
    """Check every image of SRC, split it and write OUT (imgclass prepare SRC OUT); or write an example dataset
    (--example digits OUT) or a tensorflow-datasets dataset (--from-tfds NAME OUT) as class folders."""
    from imgclass_cli.report import output
    from imgclass_cli.run.preflight import parse_size

    shard_bytes = parse_size(shard_size)
    if example is not None or from_tfds is not None:
        if out is not None:
            raise ImgclassError("with --example or --from-tfds pass only OUT, not SRC OUT")
        if example is not None and from_tfds is not None:
            raise ImgclassError("pass --example or --from-tfds, not both")
        if tfrecord:
            raise ImgclassError("--tfrecord applies to imgclass prepare SRC OUT; write the example first, then "
                                "prepare it with --tfrecord")
        target = str(src)
        if example is not None:
            from imgclass_cli.data import examples

            counts = examples.write_digits(target, ExampleConfig(seed=seed), force=force)
            what = "10 digit classes"
        else:
            from imgclass_cli.data import tfds

            counts, names = tfds.write_dataset(from_tfds, target, data_dir=str(data_dir) if data_dir else None,
                                               force=force)
            what = f"{len(names)} classes of {from_tfds}"
        parts = " and ".join(f"{n} {s}" for s, n in counts.items())
        output.say(output.stdout(), f"wrote {parts} images of {what} to {target}")
        return
    if out is None:
        raise ImgclassError("pass SRC and OUT (imgclass prepare SRC OUT), or --example digits OUT")
    from imgclass_cli.data import prepare as prep

    progress = None if quiet else output.count_progress("checking")
    config = PrepareConfig(val=val, test=test, seed=seed, copy=copy, max_size=max_size, format=fmt,
                           tfrecord=tfrecord, shard_size=shard_bytes)
    try:
        result = prep.prepare(str(src), str(out), config, force=force, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    output.print_prepare_report(result.report, fmt.value)
    if not quiet:
        output.say(output.stderr(), f"wrote {out}/manifest.csv")
    if not result.report["images"]:
        raise ImgclassError(f"{src}: none of its {result.report['files']} file(s) is a readable image (see the report)")


@command()
def backbones(
    fmt: Annotated[BackbonesFormat, typer.Option("--format", "-f", help=FORMAT_HELP)] = BackbonesFormat.table,
):
    """List the backbones finetune accepts, with their default and minimum input sizes."""
    from imgclass_cli.model.backbones import BACKBONES
    from imgclass_cli.report import output

    rows = [{"name": b.name, "keras": b.constructor, "default_size": b.default_size, "min_size": b.min_size,
             "preprocess_input": f"keras.applications.{b.module}"} for b in BACKBONES.values()]
    output.print_rows(rows, fmt.value)


def hoist_global_options(argv: list[str]) -> list[str]:
    """`imgclass train DATA --debug` works like `imgclass --debug train DATA`: people add it to the failing command."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" in argv[1:end] and argv[0] != "--debug":
        i = argv.index("--debug", 1)
        return ["--debug", *argv[:i], *argv[i + 1:]]
    return argv


def main():
    app(args=hoist_global_options(sys.argv[1:]), prog_name="imgclass")
