"""The file-system rules of imgclass: which folders it may replace or delete, and how it writes files.

Every folder imgclass writes (run directory, export, prepared folder, example and tfds exports) is staged under
a hidden temporary name beside its target and renamed into place in one step; an existing target is replaced
only with --force and only when it carries the marker of that kind of output. Every deletion goes through
`remove_tree`, and only ever targets a folder this module staged or proved to be imgclass's own.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class OutputKind:
    """A kind of folder imgclass writes, recognised by a marker file with known content."""

    what: str  # "an imgclass run directory": used in messages
    marker: str  # a file inside the folder
    signature: Callable[[str], bool]  # does the marker's text say imgclass wrote it?


def _json_has(key: str) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        try:
            return key in json.loads(text)
        except (ValueError, TypeError):
            return False

    return check


RUN_MARKER_KEY = "imgclass_version"
RUN = OutputKind("an imgclass run directory", "config.json", _json_has(RUN_MARKER_KEY))
EXPORT = OutputKind("an imgclass export directory", "export.json", _json_has("format"))
PREPARED = OutputKind("a folder written by imgclass prepare", "prepare.json", lambda text: True)
EXAMPLE_SIGNATURE = "imgclass example"
TFDS_SIGNATURE = "imgclass export of tensorflow-datasets"
EXAMPLE = OutputKind("an imgclass example export", "SOURCE.txt", lambda text: text.startswith(EXAMPLE_SIGNATURE))
TFDS = OutputKind("an imgclass tfds export", "SOURCE.txt", lambda text: text.startswith(TFDS_SIGNATURE))


def is_owned(path: str, kind: OutputKind) -> bool:
    """True when `path` is a folder holding `kind`'s marker with the content imgclass writes there."""
    try:
        with open(os.path.join(path, kind.marker), encoding="utf-8") as f:
            return kind.signature(f.read())
    except (OSError, UnicodeDecodeError):
        return False


def check_out(path: str, force: bool, kind: OutputKind) -> None:
    """Fail before any work if `path` may not be written: it exists and is not empty, and either --force is
    missing or it is not an imgclass `kind` (never a user's folder, whatever the flags)."""
    from imgclass_cli.errors import ImgclassError

    if not os.path.lexists(path) or (os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)):
        return
    if not force:
        raise ImgclassError(f"{path}: already exists; pass --force to replace it or choose another output folder")
    if not os.path.isdir(path) or os.path.islink(path) or not is_owned(path, kind):
        raise ImgclassError(f"{path}: exists and is not {kind.what}; refusing to replace it even with --force")


def remove_tree(path: str) -> None:
    """The one place imgclass deletes a folder; callers pass only folders staged here or proved owned."""
    shutil.rmtree(path, ignore_errors=True)


def remove_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


@contextmanager
def staged(path: str, force: bool, kind: OutputKind):
    """Yield a temporary folder next to `path`; on success it is renamed into place in one step.

    `check_out(path, force, kind)` decides, before and after the work, whether an existing `path` may be replaced.
    """
    check_out(path, force, kind)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(os.path.abspath(path))
    tmp = os.path.join(parent, f".{base}.partial-{os.getpid()}")
    remove_tree(tmp)
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        remove_tree(tmp)
        raise
    old = None
    if os.path.exists(path):
        check_out(path, force, kind)
        old = os.path.join(parent, f".{base}.old-{os.getpid()}")
        os.rename(path, old)
    os.rename(tmp, path)
    if old:
        remove_tree(old)


def write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: str, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def rows_to_csv(rows: list[dict], fieldnames: list[str] | None = None) -> str:
    buf = io.StringIO()
    names = fieldnames or (list(rows[0]) if rows else [])
    w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
