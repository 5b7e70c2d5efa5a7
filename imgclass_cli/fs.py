"""The file-system rules of imgclass: which folders it may replace or delete, locks, and how it writes files.

The ownership rule: imgclass deletes or replaces only what it created, recognised by a marker it wrote. Every
folder imgclass makes holds a `.imgclass` JSON file naming its kind and the files imgclass wrote there; a folder is
imgclass's own only when the marker is ours, of the expected kind, and the folder holds nothing it does not list
(a nested folder counts when it is itself ours, e.g. an export inside a run directory). Working folders whose
files change while they are written (feature cache, checkpoint, TensorBoard logs) list patterns instead of names.
Output folders are staged under a hidden temporary name beside their target and renamed into place in one step;
an existing target is replaced only with --force and only when it is imgclass's own. Every deletion goes through
`remove_tree` / `remove_file`.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import fnmatch
import io
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

from imgclass_cli import files, interrupts
from imgclass_cli.errors import JobFailed

MARKER = files.MARKER
MARKER_KEY = "imgclass"


@dataclass(frozen=True)
class OutputKind:
    """A kind of folder imgclass writes, recognised by its `.imgclass` marker (a folder without one is the user's)."""

    name: str  # the marker's "kind"
    what: str  # "an imgclass run directory": used in messages
    patterns: tuple[str, ...] = ()  # working folders: what they may hold (fnmatch on paths relative to the folder)


RUN = OutputKind("run", "an imgclass run directory")
EXPORT = OutputKind("export", "an imgclass export directory")
PREPARED = OutputKind("prepared", "a folder written by imgclass prepare")
EXAMPLE = OutputKind("example", "an imgclass example export")
TFDS = OutputKind("tfds", "an imgclass tfds export")
AUDIT = OutputKind("audit", "an imgclass audit folder")
FEATURE_CACHE = OutputKind("feature-cache", "an imgclass feature cache", patterns=("*.npy",))
CHECKPOINT = OutputKind("checkpoint", "an imgclass checkpoint", patterns=files.CHECKPOINT_PATTERNS)
TENSORBOARD = OutputKind("tensorboard", "imgclass TensorBoard logs", patterns=("*/events.out.tfevents.*",))
# Files imgclass added to a folder that is not its own (evaluate --out DIR/metrics.json): recorded so that
# a later run may overwrite them, and nothing else.
FILES = OutputKind("files", "files written by imgclass")
KINDS = (RUN, EXPORT, PREPARED, EXAMPLE, TFDS, AUDIT, FEATURE_CACHE, CHECKPOINT, TENSORBOARD, FILES)


MAX_JSON_BYTES = 64 * 2**20  # a JSON file imgclass reads (labels, config, state, marker...) larger than this is not its own


def read_json(path: str, limit: int = MAX_JSON_BYTES):
    """The JSON of a file imgclass reads, which is untrusted input: ValueError with the reason when it is larger
    than `limit` bytes, not UTF-8, not JSON, or nested too deep for the parser (a RecursionError otherwise);
    OSError when it cannot be read. Callers name the file in their message."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size > limit:
            raise ValueError(f"larger than {limit // 2**20} MB")
        data = f.read(limit + 1) if not os.path.isfile(path) else f.read()  # a pipe: still at most limit bytes
    if len(data) > limit:
        raise ValueError(f"larger than {limit // 2**20} MB")
    return parse_json(data)


def parse_json(data: bytes | str):
    """json.loads, with a document nested too deep (`[[[[...` 100,000 deep) a ValueError like any other bad JSON."""
    try:
        return json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise ValueError("nested too deep") from None


def read_marker(folder: str) -> dict | None:
    """The `.imgclass` marker of a folder when it is one imgclass wrote (valid JSON of the known shape), else None."""
    try:
        data = read_json(os.path.join(folder, MARKER), limit=MAX_JSON_BYTES)
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and isinstance(data.get(MARKER_KEY), str) and isinstance(data.get("kind"), str)
            and data.get("kind") in {k.name for k in KINDS} and isinstance(data.get("files", []), list)
            and all(isinstance(p, str) for p in data.get("files", []))):
        return None
    return data


def write_marker(folder: str, kind: OutputKind, files: list[str] | None = None, **extra) -> None:
    """Mark `folder` as imgclass's `kind`, listing `files` (default: every file now inside it)."""
    from imgclass_cli import __version__

    listed = sorted(set(files if files is not None else list_files(folder)) - {MARKER})
    write_json_atomic(os.path.join(folder, MARKER), {MARKER_KEY: __version__, "kind": kind.name, "files": listed, **extra})


def list_files(folder: str) -> list[str]:
    """Every file (and symlink) below `folder`, as '/'-separated relative paths; symlinks are not followed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                dirnames.remove(d)
                filenames.append(d)
        for name in filenames:
            found.append(os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/"))
    return found


def _holds_only(folder: str, allowed: Callable[[str], bool]) -> bool:
    """True when every file below `folder` is allowed, or lies in a nested folder that is itself imgclass's own."""
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in list(dirnames):
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                dirnames.remove(d)
                filenames.append(d)
            elif any(is_owned(full, k) for k in (EXPORT, TENSORBOARD, FILES)):
                # an export or explain's heatmaps written into a run directory later: their own marker vouches
                dirnames.remove(d)
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/")
            if rel != MARKER and not allowed(rel) and not _is_lock_file(os.path.join(dirpath, name)):
                return False
    return True


def _is_lock_file(path: str) -> bool:
    """A `.NAME.lock` left by a killed export inside a run directory: a pid and nothing else."""
    name = os.path.basename(path)
    if not (name.startswith(".") and name.endswith(".lock")) or os.path.islink(path):
        return False
    try:
        with open(path, encoding="ascii") as f:
            return f.read(32).strip().isdigit()
    except (OSError, UnicodeDecodeError):
        return False


def _matches(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    return lambda rel: any(fnmatch.fnmatchcase(rel, p) for p in patterns)


def is_owned(path: str, kind: OutputKind) -> bool:
    """True when `path` is a real folder imgclass wrote as `kind` and holds nothing imgclass did not write there."""
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    marker = read_marker(path)
    if marker is None or marker["kind"] != kind.name:
        return False
    listed = set(marker.get("files", []))
    pattern = _matches(kind.patterns)
    return _holds_only(path, lambda rel: rel in listed or pattern(rel))


def is_kind(path: str, kind: OutputKind) -> bool:
    """For *reading*: `path` carries imgclass's marker of `kind`, whatever else it holds."""
    marker = read_marker(path)
    return marker is not None and marker["kind"] == kind.name


def owned_files(folder: str) -> set[str]:
    """Files of `folder` imgclass may overwrite: those its marker lists."""
    marker = read_marker(folder)
    return set(marker.get("files", [])) if marker is not None else set()


def record(folder: str, paths: list[str]) -> None:
    """Add files imgclass wrote into `folder` (paths to them) to its marker (a `files` marker in a user's folder)."""
    from imgclass_cli.errors import ImgclassError

    marker = read_marker(folder)
    if marker is None and os.path.lexists(os.path.join(folder, MARKER)):
        raise ImgclassError(f"{os.path.join(folder, MARKER)}: not a marker imgclass wrote; refusing to write there")
    if marker is None:
        kind, listed, extra = FILES, set(), {}
    else:
        kind = next(k for k in KINDS if k.name == marker["kind"])
        listed = set(marker["files"])
        extra = {k: v for k, v in marker.items() if k not in (MARKER_KEY, "kind", "files")}
    rels = [os.path.relpath(os.path.abspath(p), os.path.abspath(folder)).replace(os.sep, "/") for p in paths]
    for rel in rels:
        full = os.path.join(folder, rel)
        if os.path.isdir(full) and not os.path.islink(full):
            listed |= {f"{rel}/{p}" for p in list_files(full)}
        else:
            listed.add(rel)
    write_marker(folder, kind, sorted(listed), **extra)


def check_replaceable(folder: str, paths: list[str]) -> None:
    """Before writing files into a folder that may be the user's (evaluate's outputs, explain's heatmaps): the folder
    is writable, and each of the files that exists was written by imgclass (listed in the folder's marker). A file of
    the user's with the same name stops the command (exit 2) and is kept."""
    from imgclass_cli.errors import ImgclassError

    check_writable(folder)
    mine = owned_files(folder) if os.path.isdir(folder) else set()
    for path in paths:
        if os.path.lexists(path) and os.path.basename(path) not in mine:
            raise ImgclassError(f"{path}: exists and was not written by imgclass; refusing to overwrite it "
                                "(choose another --out folder or move the file away)")


def check_out(path: str, force: bool, kind: OutputKind) -> None:
    """Fail before any work if `path` may not be written: it exists and is not empty, and either --force is
    missing or it is not imgclass's own `kind` (never a user's folder, whatever the flags)."""
    from imgclass_cli.errors import ImgclassError

    if not os.path.lexists(path) or (os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)):
        check_writable(os.path.dirname(os.path.abspath(path)))
        return
    if not force:
        raise ImgclassError(f"{path}: already exists; pass --force to replace it or choose another output folder")
    if not is_owned(path, kind):
        raise ImgclassError(f"{path}: exists and is not {kind.what} holding only files imgclass wrote; "
                            "refusing to replace it even with --force")
    check_writable(os.path.dirname(os.path.abspath(path)))


def check_writable(folder: str) -> None:
    """Fail (exit 2) before any work when `folder`, or the nearest existing folder above it, cannot be written."""
    from imgclass_cli.errors import ImgclassError

    probe = os.path.abspath(folder)
    while not os.path.isdir(probe):
        if os.path.lexists(probe):
            raise ImgclassError(f"{folder}: not a folder ({probe} is a file); choose another output location")
        probe = os.path.dirname(probe)
    try:  # a real write: os.access says yes to root on a read-only mount's permission bits
        fd, name = tempfile.mkstemp(prefix=".imgclass-probe-", dir=probe)
        os.close(fd)
        os.remove(name)
    except OSError as e:
        raise ImgclassError(f"{probe}: cannot write there ({e.strerror}); choose another output location "
                            "or fix its permissions") from None


def remove_tree(path: str) -> None:
    """The one place imgclass deletes a folder; callers pass only folders staged here or proved owned."""
    shutil.rmtree(path, ignore_errors=True)


def remove_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def remove_owned(path: str, kind: OutputKind) -> bool:
    """Delete `path` if it is imgclass's own `kind`; a folder holding anything else stays. True when removed."""
    if is_owned(path, kind):
        remove_tree(path)
        return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _clean_stale(parent: str, base: str, kind: OutputKind) -> None:
    """Remove `.BASE.partial-PID` / `.BASE.old-PID` left by killed runs: their pid is gone and they carry our marker."""
    pattern = re.compile(rf"\.{re.escape(base)}\.(partial|old)-(\d+)")
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        m = pattern.fullmatch(name)
        if not m or pid_alive(int(m.group(2))) or int(m.group(2)) == os.getpid():
            continue
        path = os.path.join(parent, name)
        marker = read_marker(path) if os.path.isdir(path) and not os.path.islink(path) else None
        staging = marker is not None and marker["kind"] == kind.name and marker.get("staging") == int(m.group(2))
        if (m.group(1) == "partial" and staging) or (m.group(1) == "old" and is_owned(path, kind)):
            remove_tree(path)


@contextmanager
def staged(path: str, force: bool, kind: OutputKind):
    """Yield a temporary folder next to `path`; on success it is marked and renamed into place in one step.

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
    _clean_stale(parent, base, kind)
    tmp = os.path.join(parent, f".{base}.partial-{os.getpid()}")
    try:
        if os.path.lexists(tmp):  # our own pid: a leftover of this very process (a retried call)
            if not (read_marker(tmp) or {}).get("staging") == os.getpid():
                raise OSError(errno.EEXIST, "exists and is not imgclass's staging folder", tmp)
            remove_tree(tmp)
        os.makedirs(tmp)
        write_marker(tmp, kind, [], staging=os.getpid())
    except WriteFailed as e:
        remove_tree(tmp)
        raise WriteFailed(path, e.error) from None
    except OSError as e:
        raise WriteFailed(path, e) from None
    try:
        yield tmp
        write_marker(tmp, kind)
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


def make_owned_dir(path: str, kind: OutputKind) -> str:
    """Create a working folder of `kind` (marked before anything is written in it); an existing one must be ours."""
    from imgclass_cli.errors import ImgclassError

    if os.path.lexists(path):
        if not is_owned(path, kind):
            raise ImgclassError(f"{path}: exists and is not {kind.what}; move it away or choose another output folder")
        if read_marker(path) is None:
            write_marker(path, kind, [])
        return path
    check_writable(os.path.dirname(os.path.abspath(path)))
    os.makedirs(path)
    try:
        write_marker(path, kind, [])
    except BaseException:  # a full disk: the folder just made stays empty and unmarked; rmdir removes only that
        try:
            os.rmdir(path)
        except OSError:
            pass
        raise
    return path


def make_temp_dir(parent: str, prefix: str, kind: OutputKind) -> str:
    """A new folder of imgclass's own inside `parent` (mkdtemp: never an existing one), marked as `kind`."""
    check_writable(parent)
    os.makedirs(parent, exist_ok=True)
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    write_marker(path, kind, [], pid=os.getpid())
    return path


# ---------------------------------------------------------------- locks

def lock_path(target: str) -> str:
    target = os.path.abspath(target)
    return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.lock")


class Lock:
    """An exclusive fcntl lock on `.NAME.lock` beside `target`, holding the owner's pid. The kernel drops it when
    the process dies, so a lock left by a killed run is simply taken over."""

    def __init__(self, target: str):
        self.target, self.path, self.fd = target, lock_path(target), None

    def acquire(self) -> "Lock":
        from imgclass_cli.errors import ImgclassError

        check_writable(os.path.dirname(self.path))
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise ImgclassError(f"{self.target}: in use by another imgclass process (pid {holder}, lock "
                                    f"{self.path}); wait for it to finish or choose another output folder") from None
            try:  # the previous holder may have removed the file between our open and flock: lock the current one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            remove_file(self.path)  # while still holding it: a waiting process then retries on a fresh file
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


@contextmanager
def locked(*targets: str):
    """Hold the locks of every target (in a fixed order, so two runs never deadlock)."""
    locks = []
    try:
        for t in sorted({os.path.abspath(t) for t in targets}):
            locks.append(Lock(t).acquire())
        yield
    finally:
        for lk in reversed(locks):
            lk.release()


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
    for dirpath, _, names in os.walk(folder):
        for name in names:
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
