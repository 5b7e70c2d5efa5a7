"""The Typer app: parse options, call the core, print. No TensorFlow at import time."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from imgclass_cli import __version__
from imgclass_cli.config import (
    EVAL_DEFAULTS,
    FINETUNE_DEFAULTS,
    PREDICT_DEFAULTS,
    TRAIN_DEFAULTS,
    Augment,
    EvalFormat,
    Example,
    PredictFormat,
    TrainConfig,
)
from imgclass_cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, ImgclassError

app = typer.Typer(
    help="Turn a folder of images (one sub-folder per class) into a trained, evaluated image classifier.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
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
    """Exit codes: 0 ok, 1 job failed, 2 usage or input error, 3 --fail-under gate failed, 130 interrupted."""
    _state["debug"] = debug
    from imgclass_cli._tf import set_debug

    set_debug(debug)


def handle_errors(fn):
    """Turn project errors into one red line on stderr and a documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from imgclass_cli import output

        try:
            return fn(*args, **kwargs)
        except ImgclassError as e:
            if _state["debug"]:
                raise
            output.error(e.message)
            raise typer.Exit(e.exit_code) from None
        except BrokenPipeError:
            # The reader of stdout went away (e.g. `| head`): stop quietly, like other Unix tools.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            output.error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except typer.Exit:
            raise
        except Exception as e:  # an unexpected failure: one line, traceback with --debug
            if _state["debug"]:
                raise
            first = (str(e).strip().splitlines() or [""])[0]
            output.error(f"unexpected {type(e).__name__}: {first} (run `imgclass --debug ...` for the traceback)")
            raise typer.Exit(EXIT_FAILED) from None

    return wrapper


# Options shared by train and finetune. Defaults come from config.py.
DataArg = Annotated[Path, typer.Argument(help="Folder of class sub-folders, or with train/ [val/] [test/] inside.", show_default=False)]
ImageSizeOpt = Annotated[Optional[int], typer.Option("--image-size", min=8, envvar="IMGCLASS_IMAGE_SIZE", help="Square input size in pixels [default: the backbone's size, 128 for scratch CNNs].", show_default=False)]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, envvar="IMGCLASS_BATCH_SIZE", help="Images per batch.")]
LrOpt = Annotated[float, typer.Option("--learning-rate", "--lr", min=0.0, help="Adam learning rate.")]
AugOpt = Annotated[Augment, typer.Option("--augment", help="Augmentation of training batches.")]
ValOpt = Annotated[float, typer.Option("--val-split", min=0.0, max=0.9, help="Validation fraction when there is no val/ folder (stratified, seeded).")]
DropOpt = Annotated[float, typer.Option("--dropout", min=0.0, max=0.95, help="Dropout before the classifier.")]
SeedOpt = Annotated[int, typer.Option("--seed", envvar="IMGCLASS_SEED", help="Seed for the split, shuffling, augmentation and initialisation.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory [default: runs/<command>-<timestamp>].", show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing run directory.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", envvar="IMGCLASS_QUIET", help="No progress on stderr.")]


def _train(cfg: TrainConfig, force: bool, quiet: bool) -> None:
    from imgclass_cli import output, training

    reporter = output.StderrReporter(quiet=quiet)
    result = training.run(cfg, reporter, force=force)
    output.print_train_summary(result, quiet)
    reporter.info(f"saved {result.out}")


@app.command()
@handle_errors
def train(
    data: DataArg,
    arch: Annotated[str, typer.Option("--arch", help="cnn (BatchNorm CNN), simple-cnn (the classic 3-conv net), or any backbone name trained from scratch.")] = TRAIN_DEFAULTS.arch,
    weights: Annotated[str, typer.Option("--weights", help="none, imagenet, or a weights file (backbone --arch only).")] = TRAIN_DEFAULTS.weights,
    image_size: ImageSizeOpt = TRAIN_DEFAULTS.image_size,
    epochs: Annotated[int, typer.Option("--epochs", min=1, envvar="IMGCLASS_EPOCHS", help="Training epochs.")] = TRAIN_DEFAULTS.epochs,
    batch_size: BatchOpt = TRAIN_DEFAULTS.batch_size,
    learning_rate: LrOpt = TRAIN_DEFAULTS.learning_rate,
    augment: AugOpt = TRAIN_DEFAULTS.augment,
    val_split: ValOpt = TRAIN_DEFAULTS.val_split,
    dropout: DropOpt = TRAIN_DEFAULTS.dropout,
    seed: SeedOpt = TRAIN_DEFAULTS.seed,
    out: OutOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
):
    """Train a classifier from scratch on DATA."""
    from imgclass_cli.backbones import get_backbone
    from imgclass_cli.config import SCRATCH_ARCHS

    if arch not in SCRATCH_ARCHS:
        arch = get_backbone(arch).name
    cfg = TrainConfig(command="train", data=str(data), arch=arch, weights=weights, image_size=image_size, epochs=epochs,
                      batch_size=batch_size, learning_rate=learning_rate, augment=augment, val_split=val_split,
                      dropout=dropout, seed=seed, out=str(out) if out else None)
    _train(cfg, force, quiet)


@app.command()
@handle_errors
def finetune(
    data: DataArg,
    backbone: Annotated[str, typer.Option("--backbone", "-b", envvar="IMGCLASS_BACKBONE", help="Keras Applications backbone (see `imgclass backbones`).")] = FINETUNE_DEFAULTS.arch,
    weights: Annotated[str, typer.Option("--weights", help="imagenet (download or Keras cache), none, or a local weights file.")] = FINETUNE_DEFAULTS.weights,
    image_size: ImageSizeOpt = FINETUNE_DEFAULTS.image_size,
    epochs: Annotated[int, typer.Option("--epochs", min=1, envvar="IMGCLASS_EPOCHS", help="Epochs training the head on the frozen backbone.")] = FINETUNE_DEFAULTS.epochs,
    batch_size: BatchOpt = FINETUNE_DEFAULTS.batch_size,
    learning_rate: LrOpt = FINETUNE_DEFAULTS.learning_rate,
    augment: AugOpt = FINETUNE_DEFAULTS.augment,
    val_split: ValOpt = FINETUNE_DEFAULTS.val_split,
    dropout: DropOpt = FINETUNE_DEFAULTS.dropout,
    seed: SeedOpt = FINETUNE_DEFAULTS.seed,
    out: OutOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
):
    """Fine-tune a pretrained backbone (frozen) with a new softmax head on DATA."""
    from imgclass_cli.backbones import get_backbone

    cfg = TrainConfig(command="finetune", data=str(data), arch=get_backbone(backbone).name, weights=weights,
                      image_size=image_size, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                      augment=augment, val_split=val_split, dropout=dropout, seed=seed, out=str(out) if out else None)
    _train(cfg, force, quiet)


RunArg = Annotated[Path, typer.Argument(help="Run directory written by train or finetune.", show_default=False)]


@app.command()
@handle_errors
def evaluate(
    run: RunArg,
    data: Annotated[Path, typer.Argument(help="Folder of class sub-folders (or train/val/test: see --split).", show_default=False)],
    split: Annotated[Optional[str], typer.Option("--split", help="For a train/val/test folder: which split [default: test, else val].", show_default=False)] = EVAL_DEFAULTS.split,
    fmt: Annotated[EvalFormat, typer.Option("--format", "-f", envvar="IMGCLASS_FORMAT", help="Output on stdout.")] = EVAL_DEFAULTS.format,
    output_file: Annotated[Optional[Path], typer.Option("--output", help="Write the metrics JSON here instead of RUN/metrics.json.", show_default=False)] = None,
    batch_size: BatchOpt = EVAL_DEFAULTS.batch_size,
    quiet: QuietOpt = False,
):
    """Accuracy, precision, recall, F1, per-class metrics and the confusion matrix of RUN on DATA."""
    import os

    from imgclass_cli import inference, output, rundir

    ev = inference.evaluate(str(run), str(data), split=split, batch_size=batch_size)
    report = ev.report.to_dict()
    target = str(output_file) if output_file else os.path.join(str(run), rundir.METRICS)
    rundir.write_json_atomic(target, report)
    output.print_report(report, fmt.value, title=f"{run} on {data}")
    if not quiet:
        output.stderr().print(f"wrote {target}", highlight=False, markup=False)


@app.command()
@handle_errors
def predict(
    run: RunArg,
    paths: Annotated[list[str], typer.Argument(help="Image files, folders (recursive), or - to read paths from stdin.", show_default=False)],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes to report per image.")] = PREDICT_DEFAULTS.top_k,
    fmt: Annotated[PredictFormat, typer.Option("--format", "-f", envvar="IMGCLASS_FORMAT", help="table, csv or jsonl (one record per image, input order).")] = PREDICT_DEFAULTS.format,
    batch_size: BatchOpt = PREDICT_DEFAULTS.batch_size,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 if any image could not be read.")] = PREDICT_DEFAULTS.strict,
):
    """Predict the class of images with RUN; one record per image, in input order."""
    from imgclass_cli import inference, output, rundir

    info = rundir.read_info(str(run))
    k = min(top_k, len(info.class_names))
    records = inference.predict(str(run), inference.expand_inputs(paths, sys.stdin), top_k=k, batch_size=batch_size)
    con = output.stderr()
    errors = output.write_predictions(
        records, fmt.value, k,
        on_error=lambda r: con.print(f"[yellow]Warning:[/] {r['path']}: {r['error']}", highlight=False),
    )
    if errors and strict:
        raise ImgclassError(f"{errors} image(s) could not be read (--strict)", exit_code=EXIT_FAILED)


@app.command()
@handle_errors
def prepare(
    out: Annotated[Path, typer.Argument(help="Folder to write.", show_default=False)],
    example: Annotated[Optional[Example], typer.Option("--example", help="Write an embedded example dataset (digits: scikit-learn's 1,797 real 8x8 digits).", show_default=False)] = None,
    seed: SeedOpt = TRAIN_DEFAULTS.seed,
    force: ForceOpt = False,
):
    """Write a dataset as class folders: an embedded example (--example digits)."""
    from imgclass_cli import output, prepare as prep

    if example is None:
        raise ImgclassError("pass --example digits")
    counts = prep.write_digits(str(out), seed=seed, force=force)
    output.stdout().print(f"wrote {counts['train']} train and {counts['test']} test images of 10 digit classes to {out}",
                          highlight=False, markup=False)


@app.command()
def backbones():
    """List the backbones finetune accepts, with their default and minimum input sizes."""
    from rich.table import Table

    from imgclass_cli import output
    from imgclass_cli.backbones import BACKBONES

    t = Table()
    for col in ("name", "keras", "default size", "min size", "preprocess_input"):
        t.add_column(col)
    for b in BACKBONES.values():
        t.add_row(b.name, b.constructor, str(b.default_size), str(b.min_size), f"keras.applications.{b.module}")
    output.stdout().print(t)


def main():
    app(prog_name="imgclass")
