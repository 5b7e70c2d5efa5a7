"""The Typer app: parse options, call the core, print. No TensorFlow at import time."""

from __future__ import annotations

import functools
import inspect
import math
import os
import typing
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from imgclass_cli import __version__, options
from imgclass_cli.config import (
    AuditConfig,
    BackbonesConfig,
    EvalConfig,
    ExplainConfig,
    ExportConfig,
    PredictConfig,
    PrepareConfig,
    Progress,
    RunFlags,
    TrainConfig,
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
    """Exit codes: 0 ok, 1 job failed, 2 usage or input error, 3 a gate failed (--fail-under, --fail-over),
    130 interrupted (SIGINT), 143 terminated (SIGTERM)."""
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


def _backbone(name: str):
    from imgclass_cli.model.backbones import get_backbone

    return get_backbone(name)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        raise ImgclassError(f"must be a finite number; got {value}")
    return value


# Checks of an option's value while the command line is parsed, beyond its type and range (config.py declares the
# option itself): a bad value is then a usage error like Typer's own, naming the environment variable that set it.
_PARSE_CHECKS = {("finetune", "arch"): _backbone}


def _checked_by(*checks):
    """An option callback: each check(value) may convert the value or raise ImgclassError, which becomes a usage
    error naming the option (or the environment variable that set it)."""

    def callback(value):
        if value is None:
            return value
        try:
            for check in checks:
                converted = check(value)
                value = value if converted is None or check is _backbone else converted
        except ImgclassError as e:
            raise typer.BadParameter(e.message) from None
        return value

    return callback


def _typer_option(d: options.Declared, command: str):
    """The Typer parameter of one declared option (config.py), for `command`."""
    o = d.option
    hint = d.hint
    if o.parse is not None:  # a text parsed into the value ('100MB' -> bytes, '2/4' -> (2, 4))
        hint = Optional[str] if d.default is None else str
    kw = {}
    base = next((t for t in typing.get_args(hint) or (hint,) if t is not type(None)), hint)
    if o.range is not None and base in (int, float):
        lo, hi = o.range
        kw["min"] = lo
        if math.isfinite(hi):
            kw["max"] = hi
    checks = [c for c in (o.parse, _PARSE_CHECKS.get((command, d.name)), _finite if base is float else None) if c]
    if checks:
        kw["callback"] = _checked_by(*checks)
    if o.env:
        kw["envvar"] = list(o.env) if len(o.env) > 1 else o.env[0]
    if o.metavar:
        kw["metavar"] = o.metavar
    show = True if o.show_default is None else o.show_default
    info = typer.Option(*o.flags, help=o.help, show_default=show, **kw)
    return inspect.Parameter(d.name, inspect.Parameter.KEYWORD_ONLY, default=d.default,
                             annotation=Annotated[hint, info])


def command(*option_classes, name: str | None = None):
    """A subcommand whose options are the declared fields of `option_classes` (config.py). The function declares
    only its arguments (and ctx) and takes the options as **options; an option written in the function instead of
    config.py is an error at import."""

    def decorate(fn):
        cmd = name or fn.__name__.rstrip("_")
        hints = typing.get_type_hints(fn, include_extras=True)
        own = []
        for p in inspect.signature(fn).parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                continue
            infos = [a for a in getattr(hints.get(p.name), "__metadata__", ()) if isinstance(a, typer.models.OptionInfo)]
            if infos:
                raise TypeError(f"imgclass {cmd}: option {p.name} is written in cli.py; declare it in config.py")
            own.append(p.replace(annotation=hints.get(p.name, p.annotation)))
        generated = [_typer_option(d, cmd) for cls in option_classes for d in options.declared(cls, cmd)]
        names = [p.name for p in own + generated]
        clash = {n for n in names if names.count(n) > 1}
        if clash:
            raise TypeError(f"imgclass {cmd}: {sorted(clash)} declared twice")
        fn.__signature__ = inspect.Signature(own + generated)
        fn.__annotations__ = {p.name: p.annotation for p in own + generated}
        fn.option_classes = option_classes
        return app.command(cmd, cls=_Command)(handle_errors(fn))

    return decorate


def _configs(command_name: str, values: dict, *classes):
    """The option values of a command call, back into its config dataclasses (each with that command's defaults)."""
    made = []
    left = dict(values)
    for cls in classes:
        names = {d.name for d in options.declared(cls, command_name)}
        made.append(options.defaults(cls, command_name, {k: left.pop(k) for k in list(left) if k in names}))
    if left:
        raise TypeError(f"imgclass {command_name}: no config field for {sorted(left)}")
    return made


# str, not Path: a URL (gs://bucket/data, a TFRecord prepared folder) must keep its double slash.
DataArg = Annotated[str, typer.Argument(metavar="DATA", help="Folder of class sub-folders, or with train/ [val/] [test/] inside, or a prepared folder (also a TFRecord one, local or gs://...).", show_default=False)]
RunArg = Annotated[Path, typer.Argument(metavar="RUN", help="Run directory written by train or finetune.", show_default=False)]


def _train(command_name: str, data: str, values: dict) -> None:
    from imgclass_cli.report import output
    from imgclass_cli.run import preflight

    cfg, flags, progress = _configs(command_name, values, TrainConfig, RunFlags, Progress)
    cfg.data = data
    # Mistakes that need no data fail here, in a second, before TensorFlow is imported (training.run checks again
    # and gives the warnings).
    cfg = preflight.check_train(preflight.normalized_arch(cfg), flags.force)
    from imgclass_cli.run import training

    reporter = output.StderrReporter(quiet=progress.quiet)
    result = training.run(cfg, reporter, force=flags.force, tensorboard=flags.tensorboard)
    output.print_train_summary(result, progress.quiet)
    reporter.info(output.timings_line(result.timings))
    reporter.info(f"saved {result.out}" if result.saved else f"done; the chief saves the run in {result.out}")


@command(TrainConfig, RunFlags, Progress)
def train(data: DataArg, **opts):
    """Train a classifier from scratch on DATA."""
    _train("train", data, opts)


@command(TrainConfig, RunFlags, Progress)
def finetune(data: DataArg, **opts):
    """Fine-tune a pretrained backbone with a new softmax head on DATA: the head on the frozen backbone (cached
    features), then with --unfreeze the top of the backbone at a lower learning rate."""
    _train("finetune", data, opts)


@command(EvalConfig, Progress)
def evaluate(
    run: RunArg,
    data: Annotated[str, typer.Argument(metavar="DATA", help="Folder of class sub-folders (or train/val/test: see --split), or a prepared folder (also a TFRecord one, local or gs://...).", show_default=False)],
    ctx: typer.Context,
    **opts,
):
    """Accuracy, precision, recall, F1, per-class metrics and the confusion matrix of RUN on DATA, and report.html:
    one page with them and the most confident mistakes beside their Grad-CAM heatmaps."""
    from imgclass_cli.report import output
    from imgclass_cli.run import inference

    config, progress = _configs("evaluate", opts, EvalConfig, Progress)
    reporter = output.StderrReporter(quiet=progress.quiet)
    ev = inference.evaluate_run(str(run), data, config, warn=reporter.warn, stage=reporter.stage, info=reporter.info,
                                fail_under_source=_source_name(ctx, "fail_under"),
                                fail_over_source=_source_name(ctx, "fail_over"))
    report = ev.report.to_dict()
    used = f" ({report['split']} split)" if report.get("split") not in (None, "all") else ""
    output.print_report(report, config.format.value, title=f"{run} on {data}{used}")
    if not progress.quiet:
        for path in [ev.metrics_file, *ev.files]:
            output.say(output.stderr(), f"wrote {path}")
        if ev.gates:
            output.print_gates(ev.gates)
    ev.enforce_gates()


@command(PredictConfig, Progress)
def predict(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory, export directory (imgclass export), .tflite or .onnx file.", show_default=False)],
    paths: Annotated[list[str], typer.Argument(metavar="PATH", help="Image files, folders (recursive), or - to read paths from stdin.", show_default=False)],
    **opts,
):
    """Predict the class of images with RUN; one record per image, in input order (with --shard: in path order)."""
    from imgclass_cli.config import PredictFormat
    from imgclass_cli.report import output
    from imgclass_cli.run import inference

    config, progress = _configs("predict", opts, PredictConfig, Progress)
    job = inference.start_predict(str(run), paths, config, sys.stdin)
    reporter = output.StderrReporter()
    for line in (job.precision_line, job.note):
        if line and not progress.quiet:
            output.say(reporter.console, line)
    con = reporter.console
    live = output.stream_progress_live(con, records_after=config.format == PredictFormat.table)
    with output.Stage("predicting", job.total, quiet=progress.quiet, live=live, console=con) as bar:
        # Warnings through the bar's console land above the bar; the table is printed after the bar is gone.
        errors = output.write_predictions(_counted(job.records, bar), config.format.value, job.top_k,
                                          on_error=lambda r: reporter.warn(f"{r['path']}: {r['error']}"))
    job.finish(bar.done, errors)


def _counted(records, progress):
    for r in records:
        progress.advance()
        yield r
    progress.close()


@command(ExplainConfig, Progress)
def explain(
    run: RunArg,
    images: Annotated[list[str], typer.Argument(metavar="IMAGE", help="Image files, or folders of them (recursive).", show_default=False)],
    **opts,
):
    """Where RUN's model looks (Grad-CAM) in each IMAGE: OUT/NAME.png (the image beside its heatmap overlay) and
    OUT/NAME.npy (the heatmap, float32 0..1, the image's height x width); one JSON record per image on stdout."""
    from imgclass_cli.report import output
    from imgclass_cli.run import explain as explainer

    config, progress = _configs("explain", opts, ExplainConfig, Progress)
    with output.Stage("explaining", quiet=progress.quiet) as bar:
        job = explainer.start(str(run), images, config, progress=bar)
        bar.update(0, job.total)
        output.write_jsonl(job.records)
    if not progress.quiet:
        output.say(output.stderr(), f"wrote {job.total} heatmap(s) to {job.out}")


@command(ExportConfig, Progress, name="export")
def export_(run: RunArg, **opts):
    """Export RUN's model as a SavedModel, TFLite, ONNX or .keras file with its labels, checked against the Keras
    model."""
    from imgclass_cli.report import output
    from imgclass_cli.run import export

    config, progress = _configs("export", opts, ExportConfig, Progress)
    result = export.export(str(run), config, reporter=output.StderrReporter(quiet=progress.quiet))
    output.print_export(result)


@command(PrepareConfig, Progress)
def prepare(
    src: Annotated[Path, typer.Argument(metavar="SRC", help="The image folder to check and split (class folders, or train/val/test of class folders); with --example or --from-tfds: OUT.", show_default=False)],
    out: Annotated[Optional[Path], typer.Argument(metavar="OUT", help="Folder to write: class folders of links, manifest.csv, prepare.json.", show_default=False)] = None,
    **opts,
):
    """Check every image of SRC, split it and write OUT (imgclass prepare SRC OUT); or write an example dataset
    (--example digits OUT) or a tensorflow-datasets dataset (--from-tfds NAME OUT) as class folders."""
    from imgclass_cli.data import prepare as prep
    from imgclass_cli.report import output

    config, progress = _configs("prepare", opts, PrepareConfig, Progress)
    bar = None if progress.quiet or not prep.checks_images(config) else output.count_progress("checking")
    try:
        done = prep.run(str(src), str(out) if out is not None else None, config, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if done.report is None:
        output.say(output.stdout(), done.summary)
        return
    output.print_prepare_report(done.report, config.format.value)
    if not progress.quiet:
        output.say(output.stderr(), f"wrote {out}/manifest.csv")
    done.check_found_images()


@command(AuditConfig, Progress)
def audit(data: DataArg, **opts):
    """Find the wrong labels (confident learning on embeddings of --run or --backbone), the near-duplicates within
    and across classes and splits, and the dark, blurry, tiny or odd images of DATA; write audit.json,
    issues.csv and audit.html to --out. DATA is only read."""
    from imgclass_cli.report import audit as audit_report
    from imgclass_cli.report import output
    from imgclass_cli.run import audit as core

    config, progress = _configs("audit", opts, AuditConfig, Progress)
    reporter = output.StderrReporter(quiet=progress.quiet)
    result = core.audit(data, config, reporter)
    audit_report.print_audit(result.report, config.format.value)
    if not progress.quiet:
        for path in result.written:
            output.say(output.stderr(), f"wrote {path}")
    result.enforce_gates()


@command(BackbonesConfig)
def backbones(**opts):
    """List the backbones finetune accepts, with their default and minimum input sizes."""
    from imgclass_cli.model.backbones import BACKBONES
    from imgclass_cli.report import output

    (config,) = _configs("backbones", opts, BackbonesConfig)
    rows = [{"name": b.name, "keras": b.constructor, "default_size": b.default_size, "min_size": b.min_size,
             "preprocess_input": f"keras.applications.{b.module}"} for b in BACKBONES.values()]
    output.print_rows(rows, config.format.value)


def hoist_global_options(argv: list[str]) -> list[str]:
    """`imgclass train DATA --debug` works like `imgclass --debug train DATA`: people add it to the failing command."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" in argv[1:end] and argv[0] != "--debug":
        i = argv.index("--debug", 1)
        return ["--debug", *argv[:i], *argv[i + 1:]]
    return argv


def main():
    app(args=hoist_global_options(sys.argv[1:]), prog_name="imgclass")
