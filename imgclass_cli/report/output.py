"""How things look: rich tables and progress on stderr, JSON/CSV/JSONL writers on stdout."""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from imgclass_cli import fs
from imgclass_cli.report.metrics import METRIC_KEYS


def stdout() -> Console:
    # Created per call so that test runners that swap sys.stdout see the output.
    return Console(file=sys.stdout, soft_wrap=False, width=None if sys.stdout.isatty() else 160, emoji=False)


def stderr() -> Console:
    return Console(file=sys.stderr, stderr=True, width=None if sys.stderr.isatty() else 160, emoji=False)


# Characters that would act on the terminal or hide text instead of being seen: C0/C1 controls (ESC starts an ANSI
# sequence, CR overwrites a line), line/paragraph separators, bidirectional overrides.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match) -> str:
    ch = match.group()
    code = ord(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a non-UTF-8 file name (surrogateescape): show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text) -> str:
    """A user-derived string with the characters that would act instead of being seen (controls, bidirectional
    overrides, the bytes of a non-UTF-8 name) shown as backslash escapes: the terminal, report.html and figure
    captions show names through here."""
    return _INVISIBLE.sub(_visible, str(text))


def escape(text) -> str:
    """The one way a user-derived string (a file, folder or class name, a message that quotes one) reaches a
    person: control characters shown as backslash escapes (an ESC byte prints as \\x1b, a newline as \\n), then
    rich markup escaped, so `[draft] cat.png` prints as itself. Machine formats (CSV, JSON, JSONL) use exact names."""
    from rich.markup import escape as markup_escape

    return markup_escape(visible(text))


def say(console: Console, text: str) -> None:
    """One plain line that may quote user-derived names."""
    console.print(escape(text), highlight=False, soft_wrap=True)


def error(message: str) -> None:
    # soft_wrap: one line however long, so scripts can grep it.
    stderr().print(f"[bold red]Error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _metric_line(logs: dict) -> str:
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs]
    short = {"accuracy": "acc", "val_accuracy": "val_acc"}
    return " ".join(f"{short.get(k, k)} {logs[k]:.3f}" for k in keys)


class Stage:
    """Progress of one stage that can take more than a second (decode check, feature cache, evaluate, predict,
    export parity): a transient bar in a terminal, else one plain line when the stage ends. Use as a context
    manager, or call it as stage(done, total) and close() it."""

    def __init__(self, description: str, total: int | None = None, *, unit: str = "images", quiet: bool = False,
                 live: bool | None = None, console: Console | None = None):
        self.description, self.total, self.unit, self.quiet = description, total, unit, quiet
        self.console = console or stderr()
        self.live = self.console.is_terminal if live is None else live
        self.done = 0
        self.t0 = time.time()
        self.progress = None
        self.task = None

    def __enter__(self) -> "Stage":
        return self

    def __exit__(self, *exc) -> None:
        self.close(completed=exc[0] is None)

    def __call__(self, done: int, total: int | None = None) -> None:
        self.update(done, total)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        if self.quiet or not self.live:
            return
        if self.progress is None:
            from rich.progress import Progress

            # redirect_stdout=False: data written to stdout meanwhile (predict's records) stays on stdout.
            self.progress = Progress(*_stage_columns(self.total is not None, self.unit), console=self.console,
                                     transient=True, redirect_stdout=False, redirect_stderr=False)
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=self.total)
        self.progress.update(self.task, completed=done, total=self.total)

    def close(self, completed: bool = True) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.task = None
        elif completed and not self.quiet and not self.live and self.done:
            self.console.print(f"{self.description}: {self.done} {self.unit} in {time.time() - self.t0:.1f}s",
                               highlight=False, markup=False)
        self.quiet = True  # closed: later calls print nothing


def _stage_columns(total_known: bool, unit: str) -> list:
    """A stage's bar: done/total with the time left when the total is known; else the count and the rate (a bar
    and "83/?" say nothing)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.text import Text

    if total_known:
        return [TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("eta"), TimeRemainingColumn()]

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f} {unit}/s" if task.speed else "")

    return [TextColumn("{task.description}"), TextColumn(f"{{task.completed}} {unit}"), TimeElapsedColumn(), Rate()]


def stream_progress_live(console: Console, records_after: bool) -> bool:
    """Whether a live bar on stderr may run while records go to stdout: stderr is a terminal, and the records come
    after the bar is gone (a table) or go to a file. A terminal or a pipe (`| head`, whose output lands on the
    same terminal) would get the bar glued to the first record, so those get one plain line at the end instead."""
    import os
    import stat

    if not console.is_terminal:
        return False
    if records_after:
        return True
    try:
        mode = os.fstat(sys.stdout.fileno()).st_mode
    except (OSError, ValueError, AttributeError):  # a test runner's stdout: not a terminal, not a pipe
        return not sys.stdout.isatty()
    return not sys.stdout.isatty() and not stat.S_ISFIFO(mode) and not stat.S_ISSOCK(mode)


def count_progress(description: str) -> Stage:
    """A file-count progress (prepare's check): call it as progress(done, total), then close()."""
    return Stage(description, unit="files")


# The widest metrics of an epoch line: "loss 12.345 acc 0.999 val_loss 12.345 val_acc 0.999".
METRICS_WIDTH = 52


def _epoch_columns(epochs: int, steps: int, width: int) -> list:
    """The live epoch line's columns for a terminal `width` wide: the label, the step count and every metric
    always; then, while they fit, the elapsed time, the time left and the bar (the decoration goes, the numbers
    stay: at 80 columns "epoch 3/10 12/12 0:00:01 loss ... val_acc 0.917")."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Column

    def fixed(w: int) -> Column:
        return Column(no_wrap=True, min_width=w)

    label = TextColumn("{task.description}", table_column=fixed(len(f"epoch {epochs}/{epochs}")))
    count = MofNCompleteColumn(table_column=fixed(2 * len(str(steps)) + 1))
    metrics = TextColumn("{task.fields[metrics]}", table_column=Column(no_wrap=True, overflow="ellipsis"))
    used = len(f"epoch {epochs}/{epochs}") + 1 + 2 * len(str(steps)) + 1 + 1 + METRICS_WIDTH
    elapsed, eta, bar = [], [], []
    if used + 8 <= width:
        elapsed, used = [TimeElapsedColumn(table_column=fixed(7))], used + 8
    if used + 12 <= width:
        eta, used = [TextColumn("eta", table_column=fixed(3)), TimeRemainingColumn(table_column=fixed(7))], used + 12
    if used + 13 <= width:
        bar = [BarColumn(bar_width=12)]
    return [label, *bar, count, *elapsed, *eta, metrics]


class StderrReporter:
    """Progress on stderr: live bars in a terminal (one per epoch, with ETA), one plain line per epoch or stage
    otherwise. Each fit (a phase, a resumed run) starts with train_begin; epochs are numbered as Keras counts
    them (a resumed run's first epoch is 6/10, not 1/10)."""

    def __init__(self, quiet: bool = False, live: bool | None = None):
        self.quiet = quiet
        self.console = stderr()
        self.live = self.console.is_terminal if live is None else live
        self.progress = None
        self.task = None
        self.epochs = 0
        self.steps = 0
        self.t0 = 0.0
        self.fit_t0 = 0.0
        self.first_epoch = 0

    def info(self, message: str) -> None:
        if not self.quiet:
            say(self.console, message)

    def warn(self, message: str) -> None:
        # soft_wrap: one line however long, like an error, so scripts can grep it.
        self.console.print(f"[yellow]Warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

    def stage(self, description: str, total: int | None = None, unit: str = "images") -> Stage:
        return Stage(description, total, unit=unit, quiet=self.quiet, live=self.live, console=self.console)

    def train_begin(self, epochs: int, steps: int) -> None:
        self.close()  # a previous phase's display, if its fit ended without train_end
        self.epochs, self.steps = epochs, steps
        self.fit_t0 = time.time()
        self.first_epoch = 0
        if self.quiet or not self.live:
            return
        from rich.progress import Progress

        self.progress = Progress(*_epoch_columns(epochs, steps, self.console.width), console=self.console,
                                 redirect_stdout=False, redirect_stderr=False)
        self.progress.start()

    def epoch_begin(self, epoch: int) -> None:
        """epoch: 1-based, counted over the whole fit (a resumed fit starts after the epochs already done)."""
        self.t0 = time.time()
        self.first_epoch = self.first_epoch or epoch
        if self.progress is not None:
            self.task = self.progress.add_task(f"epoch {epoch}/{self.epochs}", total=self.steps, metrics="")

    def batch_end(self, step: int, logs: dict) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=step, metrics=_metric_line(logs))

    def epoch_end(self, epoch: int, logs: dict) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=self.steps, metrics=_metric_line(logs))
        elif not self.quiet:
            per_epoch = (time.time() - self.fit_t0) / max(1, epoch - self.first_epoch + 1)
            left = self.epochs - epoch
            eta = f", eta {per_epoch * left:.0f}s" if left else ""
            self.console.print(f"epoch {epoch}/{self.epochs}  {_metric_line(logs)}  ({time.time() - self.t0:.1f}s{eta})",
                               highlight=False, markup=False)
        self.task = None

    def train_end(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display (idempotent): the next line (an error, Ctrl-C's message) starts on its own line."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.task = None


def report_table(report: dict, title: str) -> list[Table]:
    summary = Table(title=escape(title), show_header=True)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key in METRIC_KEYS:
        summary.add_row(key, _fmt(report[key]))
    for key, value in report.get("top_k_accuracy", {}).items():
        summary.add_row(f"{key}_accuracy", _fmt(value))
    if "calibration" in report:
        summary.add_row("temperature", f"{report['calibration']['temperature']:.4f}")
    seen = report.get("seen_by_run")
    if seen and seen.get("train", 0) + seen.get("val", 0):
        summary.add_row("seen by the run", f"{seen['train']} train, {seen['val']} val of {seen['of']}")
    summary.add_row("samples", str(report["num_samples"]))

    per_class = Table(title="per class")
    for col in ("class", "precision", "recall", "f1", "support"):
        per_class.add_column(col, justify="left" if col == "class" else "right")
    for name, m in report["per_class"].items():
        per_class.add_row(escape(name), _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), str(m["support"]))

    cm = Table(title="confusion matrix (rows: true, columns: predicted)")
    cm.add_column("true \\ pred")
    for name in report["class_names"]:
        cm.add_column(escape(name), justify="right")
    for name, row in zip(report["class_names"], report["confusion_matrix"]):
        cm.add_row(escape(name), *(str(v) for v in row))
    tables = [summary, per_class, cm]
    if report.get("risk_coverage"):
        tables.append(risk_coverage_table(report))
    return tables


def _threshold_text(t: float) -> str:
    """4 decimals, or every digit when 4 would round it (a threshold must be typed as it is to do the same)."""
    return f"{t:.4f}" if abs(t - round(t, 4)) < 1e-12 else repr(t)


def risk_coverage_table(report: dict) -> Table:
    """What `predict --min-confidence T` would answer on this data, and how well (plus the --target-accuracy
    threshold when one was asked for)."""
    t = Table(title="risk-coverage")
    for col in ("min confidence", "coverage", "accuracy", "images"):
        t.add_column(col, justify="right")
    for row in report["risk_coverage"]:
        t.add_row(_threshold_text(row["threshold"]), f"{row['coverage']:.4f}",
                  "-" if row["accuracy"] is None else f"{row['accuracy']:.4f}", str(row["images"]))
    target = report.get("target")
    if target:
        t.caption = (f"target accuracy {target['accuracy']:g}: --min-confidence {_threshold_text(target['threshold'])} "
                     f"answers {target['images']} images ({target['coverage']:.1%})" if target["reachable"] else
                     f"target accuracy {target['accuracy']:g}: not reachable at any confidence threshold")
    return t


def print_report(report: dict, fmt: str, title: str = "metrics") -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["metric", "value"])
        for key, value in flatten(report).items():
            w.writerow([key, value])
    else:
        con = stdout()
        for t in report_table(report, title):
            con.print(t)


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested metrics -> {"per_class.ants.f1": 0.9, ...}; risk_coverage rows by threshold
    (risk_coverage[0.9000].coverage); other lists (class names, confusion matrix, tta views) are skipped."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif key == "risk_coverage" and isinstance(v, list):
            for row in v:
                for field in ("coverage", "accuracy", "images"):
                    out[f"{key}[{row['threshold']:.4f}].{field}"] = row[field]
        elif not isinstance(v, list):
            out[key] = v
    return out


def print_train_summary(result, quiet: bool) -> None:
    con = stdout()
    t = Table(title=escape(f"run {result.out}"))
    t.add_column("item")
    t.add_column("value", justify="right")
    t.add_row("classes", str(len(result.class_names)))
    for split, n in result.counts.items():
        t.add_row(f"{split} images", str(n))
    t.add_row("image size", str(result.image_size))
    if result.history:
        for k, v in result.history[-1].items():
            if k not in ("epoch", "phase"):  # "final phase 1" told a scratch run nothing
                t.add_row(f"final {k}", _fmt(v))
    t.add_row("epochs", str(len(result.history)))
    t.add_row("seconds", f"{result.seconds:.1f}")
    con.print(t)
    if result.report is not None and not quiet:
        for table in report_table(result.report.to_dict(), "validation metrics")[:2]:
            con.print(table)


def timings_line(timings: dict) -> str:
    """'time 61.2s: scan 0.4s, check 9.1s, 12 epochs 44.0s (3.7s each), final validation 0.8s, save 0.3s, other ...'"""
    parts = []
    for k, v in timings.items():
        if k == "epochs" and v:
            parts.append(f"{len(v)} epoch{'s' if len(v) > 1 else ''} {sum(v):.1f}s ({sum(v) / len(v):.1f}s each)")
        elif k not in ("epochs", "total") and (v >= 0.05 or k == "other"):
            parts.append(f"{k.replace('_', ' ')} {v:.1f}s")
    return f"time {timings.get('total', 0):.1f}s: " + ", ".join(parts)


def _csv_row(rec: dict, k: int) -> list:
    row = [rec["path"], rec["status"], rec["label"] or "", "" if rec["confidence"] is None else f"{rec['confidence']:.6f}"]
    if k > 1:
        for i in range(k):
            if i < len(rec["top_k"]):
                row += [rec["top_k"][i]["label"], f"{rec['top_k'][i]['score']:.6f}"]
            else:
                row += ["", ""]
    row.append(rec["error"] or "")
    return row


def write_predictions(records: Iterable[dict], fmt: str, top_k: int, on_error) -> int:
    """Write records as they come (csv, jsonl) or as one table at the end; returns how many were errors."""
    errors = 0
    rows = []
    w = csv.writer(sys.stdout, lineterminator="\n")
    if fmt == "csv":
        header = ["path", "status", "label", "confidence"]
        if top_k > 1:
            for i in range(1, top_k + 1):
                header += [f"label_{i}", f"score_{i}"]
        w.writerow(header + ["error"])
    for rec in records:
        if rec["status"] == "error":  # "unsure" is an answer (below --min-confidence), not an error
            errors += 1
            on_error(rec)
        if fmt == "jsonl":
            sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif fmt == "csv":
            w.writerow(_csv_row(rec, top_k))
            sys.stdout.flush()
        else:
            rows.append(rec)
    if fmt == "table":
        stdout().print(_predictions_table(rows, top_k))
    return errors


def _predictions_table(rows: list[dict], top_k: int) -> Table:
    """predict's table; a status column when some record is unsure (below --min-confidence)."""
    unsure = any(rec["status"] == "unsure" for rec in rows)
    t = Table()
    t.add_column("path", overflow="fold")
    t.add_column("label")
    t.add_column("confidence", justify="right")
    if unsure:
        t.add_column("status")
    if top_k > 1:
        t.add_column(f"top {top_k}")
    for rec in rows:
        cells = [escape(rec["path"]), escape(rec["label"]) if rec["label"] else f"[red]error: {escape(rec['error'])}[/]",
                 "" if rec["confidence"] is None else f"{rec['confidence']:.4f}"]
        if unsure:
            cells.append("[yellow]unsure[/]" if rec["status"] == "unsure" else rec["status"])
        if top_k > 1:
            cells.append(", ".join(f"{escape(e['label'])} {e['score']:.3f}" for e in rec["top_k"]))
        t.add_row(*cells)
    return t


def write_jsonl(records: Iterable[dict]) -> int:
    """One JSON record per line on stdout, each as soon as it comes; returns how many."""
    n = 0
    for rec in records:
        sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        n += 1
    return n


def print_gates(results) -> None:
    """One line per gate on stderr: metric, value, threshold, pass or by how much it missed (--fail-under: short
    by; --fail-over: over by)."""
    con = stderr()
    for r in results:
        miss = "over by" if r.gate.maximum else "short by"
        verdict = "[green]ok[/]" if r.passed else f"[bold red]FAILED[/] ({miss} {r.shortfall:.4f})"
        sign = ("<=" if r.passed else ">") if r.gate.maximum else (">=" if r.passed else "<")
        con.print(f"gate {escape(r.gate.key)} {r.value:.4f} {sign} {r.gate.threshold:.4f} {verdict}", highlight=False)


def print_rows(rows: list[dict], fmt: str) -> None:
    """A listing on stdout: a table (keys as headers, underscores as spaces), a JSON array, or CSV."""
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        sys.stdout.write(fs.rows_to_csv(rows))
    else:
        t = Table()
        for col in rows[0] if rows else ():
            t.add_column(col.replace("_", " "))
        for r in rows:
            t.add_row(*(escape(v) for v in r.values()))
        stdout().print(t)


def print_export(result) -> None:
    """What export wrote, and the parity check's top-1 agreement."""
    t = Table(title=escape(f"export {result.out}"))
    t.add_column("item")
    t.add_column("value", justify="right")
    quant = result.quantize + (f", {result.int8_mode}" if getattr(result, "int8_mode", None) else "") if result.quantize else ""
    t.add_row("format", result.format + (f" ({quant})" if quant else ""))
    t.add_row("model", escape(result.model))
    t.add_row("size", f"{result.bytes / 1e6:.2f} MB")
    t.add_row("input", f"(batch, {result.image_size}, {result.image_size}, 3) float32 0-255"
              if result.format != "keras" else "(batch, any, any, 3) float32 0-255")
    t.add_row("classes", str(len(result.class_names)))
    p = result.parity
    if p is None:
        t.add_row("parity", "skipped (--parity 0)")
    else:
        t.add_row("parity images", escape(f"{p.images} ({p.source})"))
        t.add_row("top-1 agreement", f"{p.agreement:.4f} (min {p.min_agreement:.2f})")
        t.add_row("max prob. difference", f"{p.max_abs_diff:.2e}")
    stdout().print(t)


def print_prepare_report(report: dict, fmt: str) -> None:
    """prepare's findings: counts per class and split, formats, sizes, then every problem with its file."""
    if fmt == "json":
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        return
    con = stdout()
    splits = list(report["counts"])
    t = Table(title=f"{report['images']} images, {len(report['classes'])} classes")
    t.add_column("class")
    for s in splits:
        t.add_column(s, justify="right")
    t.add_column("total", justify="right")
    for c in report["classes"]:
        t.add_row(escape(c), *(str(report["counts"][s].get(c, 0)) for s in splits), str(report["per_class"][c]))
    t.add_row("all", *(str(sum(report["counts"][s].values())) for s in splits), str(report["images"]))
    con.print(t)
    con.print(_prepare_summary(report))
    _print_findings(con, report)


def _prepare_summary(report: dict) -> Table:
    s = Table(title="summary", show_header=False)
    s.add_column("item")
    s.add_column("value")
    s.add_row("source", escape(report["source"]))
    s.add_row("files looked at", str(report["files"]))
    s.add_row("formats", escape(", ".join(f"{k} {v}" for k, v in report["formats"].items())))
    for fmt_name, paths in report.get("rare_formats", {}).items():
        s.add_row(escape(f"  {fmt_name} files"), escape(", ".join(paths)))
    for dim in ("width", "height", "megapixels"):
        st = report["sizes"].get(dim)
        if st:
            s.add_row(dim, f"min {st['min']}  median {st['median']}  max {st['max']}")
    sm = report["small"]
    s.add_row(f"small (< {sm['threshold']} px)", str(sm["count"]))
    s.add_row("class imbalance (largest / smallest)", str(report["imbalance_ratio"]))
    d = report["duplicates"]
    s.add_row("exact duplicates", f"{len(d['within_class'])} within a class, {len(d['across_classes'])} across classes, "
                                  f"{len(d['across_splits'])} across splits")
    s.add_row("bad files (left out)", str(len(report["bad"])))
    if report.get("excluded"):
        s.add_row("excluded (--exclude)", escape(f"{report['excluded']['count']} listed in {report['excluded']['file']}"))
    s.add_row("ignored (hidden, system, outside classes)", str(len(report["ignored"])))
    dec = report.get("decode", {})
    if dec.get("images_per_second"):
        s.add_row("decode check", f"{dec['images']} files in {dec['seconds']:.1f}s ({dec['images_per_second']:.0f}/s)")
    shards = (report.get("tfrecord") or {}).get("shards")
    what = (f"{sum(shards.values())} TFRecord shards: " + ", ".join(f"{k} {v}" for k, v in shards.items()) if shards
            else ', '.join(f'{v} {k}s' for k, v in report.get('links', {}).items()) or 'no links')
    s.add_row("written", escape(f"{report['out']}  ({what}"
                         f"{', %d downscaled copies' % report['downscaled'] if report.get('downscaled') else ''})"))
    return s


def _print_findings(con: Console, report: dict) -> None:
    """Every problem with its file: bad files, empty folders, duplicates, odd extensions, then notes by kind."""
    d = report["duplicates"]
    problems = [(b["path"], f"[red]bad[/]: {escape(b['reason'])}") for b in report["bad"]]
    problems += [(p, "[yellow]empty class folder[/]") for p in report["empty_class_folders"]]
    problems += [(f"{(report.get('excluded') or {}).get('file')}: line {u['line']}: {u['path']}",
                  "[yellow]listed in --exclude but not a file of SRC (ignored)[/]")
                 for u in (report.get("excluded") or {}).get("unknown", [])]
    problems += [(" = ".join(g), "[yellow]same image in different classes (conflicting labels)[/]")
                 for g in d["across_classes"]]
    problems += [(" = ".join(g), "[yellow]same image in different splits (leakage)[/]") for g in d["across_splits"]]
    problems += [(" = ".join(g), "duplicate within a class (kept in one split)") for g in d["within_class"]]
    problems += [(m["path"], escape(f"{m['content'].upper()} content with another extension (read by content)"))
                 for m in report["extension_mismatch"]]
    shown: dict[str, int] = {}
    for n in report["notes"]:  # a folder of 5,000 grayscale scans: ten examples of each kind, then a count
        kind = n["note"].split(":")[0]
        shown[kind] = shown.get(kind, 0) + 1
        if shown[kind] <= 10:
            problems.append((n["path"], escape(n["note"])))
    problems += [(f"... {c - 10} more", escape(k)) for k, c in shown.items() if c > 10]
    if problems:
        p = Table(title="findings")
        p.add_column("file", overflow="fold")
        p.add_column("finding")
        for path, what in problems:
            p.add_row(escape(path), what)
        con.print(p)
