"""The file-system rules of imgclass: which folders it may replace or delete, and how it writes files.

Every folder imgclass writes (run directory, export, prepared folder, example and tfds exports) is staged under
a hidden temporary name beside its target and renamed into place in one step; an existing target is replaced
only with --force and only when it carries the marker of that kind of output. Every deletion goes through
`remove_tree`, and only ever targets a folder this module staged or proved to be imgclass's own.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import secrets
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

from imgclass_cli import interrupts
from imgclass_cli.errors import JobFailed


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
    A failed write inside (a full disk, a read-only folder) removes the temporary folder and becomes one
    `WriteFailed` naming `path`.
    """
    check_out(path, force, kind)
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise WriteFailed(parent, e) from None
    base = os.path.basename(os.path.abspath(path))
    tmp = os.path.join(parent, f".{base}.partial-{os.getpid()}")
    remove_tree(tmp)
    try:
        os.makedirs(tmp)
    except OSError as e:
        raise WriteFailed(path, e) from None
    try:
        yield tmp
    except WriteFailed as e:
        written = _tree_size(tmp)
        remove_tree(tmp)
        raise WriteFailed(path, e.error, written=written) from None
    except OSError as e:
        if not _is_write_error(e, tmp):
            remove_tree(tmp)
            raise
        written = _tree_size(tmp)
        remove_tree(tmp)
        raise WriteFailed(path, e, written=written) from None
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


# --- writing files: atomic, and a failure is one message naming the folder -------------------------------------

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class WriteFailed(JobFailed):
    """A write that failed (full disk, read-only or missing folder): exit 1, nothing partial left behind."""

    def __init__(self, folder: str, error: OSError, needed: int | None = None, written: int | None = None):
        self.folder, self.error, self.needed = folder, error, needed
        if error.errno in NO_SPACE:
            free = free_bytes(folder)
            sizes = [f"needs {_mb(needed)}" if needed is not None else "",
                     f"{_mb(written)} written before the disk filled" if written else "",
                     f"{_mb(free)} free" if free is not None else ""]
            detail = ", ".join(x for x in sizes if x)
            message = f"{folder}: no space left on device ({detail}); free some space or write elsewhere"
        else:
            message = f"{folder}: could not write ({error.strerror or error})"
        super().__init__(message)


def free_bytes(folder: str) -> int | None:
    """Free space for this user on the file system of `folder` (or its nearest existing parent)."""
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def check_space(folder: str, needed: int) -> None:
    """Refuse a write that cannot fit before starting it: a half-written file on a full disk helps nobody."""
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise WriteFailed(folder, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), needed=needed)


def _is_write_error(e: OSError, tmp: str) -> bool:
    inside = any(isinstance(f, str) and os.path.abspath(f).startswith(os.path.abspath(tmp) + os.sep)
                 for f in (e.filename, e.filename2))
    return e.errno in NO_SPACE or inside


def _tree_size(folder: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st.st_nlink == 1:  # a hardlink to the user's file takes no new space
                total += st.st_size
    return total


def _open_temp(path: str) -> tuple[int, str]:
    """A new file with a unique name beside `path` (O_EXCL: never someone else's, never an earlier attempt's)."""
    folder, base = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(folder, f".{base}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def write_files_atomic(files: dict[str, bytes]) -> None:
    """Write every file under a unique temporary name (fsync), then rename them all into place.

    A failure while writing (a full disk) replaces none of them and leaves no temporary file; only the renames,
    which need no space, come after the first target is touched. A signal arriving meanwhile is acted on after the
    renames (interrupts.deferred), never half-way."""
    if not files:
        return
    folder = os.path.dirname(os.path.abspath(next(iter(files))))
    check_space(folder, sum(len(b) for b in files.values()))
    temps: dict[str, str] = {}
    with interrupts.deferred():
        try:
            for path, data in files.items():
                fd, tmp = _open_temp(path)
                temps[path] = tmp
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            for path, tmp in temps.items():
                os.replace(tmp, path)
        except BaseException as e:
            for tmp in temps.values():
                remove_file(tmp)
            if isinstance(e, OSError):
                raise WriteFailed(folder, e, needed=sum(len(b) for b in files.values())) from None
            raise


def write_bytes_atomic(path: str, data: bytes) -> None:
    write_files_atomic({path: data})


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def rows_to_csv(rows: list[dict], fieldnames: list[str] | None = None) -> str:
    buf = io.StringIO()
    names = fieldnames or (list(rows[0]) if rows else [])
    w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
