"""Exclude lists: a text file naming images to leave out (prepare --exclude, train/finetune --exclude; written by
`imgclass audit --exclude-list`). One path per line, relative to the data folder or absolute; blank lines are
skipped. Nothing in the data folder is moved or deleted: the listed images are simply not used. The file is
untrusted input: its errors name the file and line, and a listed path that is not an image of the data is
reported, not fatal."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from imgclass_cli.errors import ImgclassError

MAX_BYTES = 256 * 1024**2  # a list of every file of a 2-million-image set fits; a larger file is not a list


@dataclass
class ExcludeList:
    """The paths of an exclude file, each resolved (symlinks followed) against the data folder."""

    source: str  # the file, as the user named it
    lines: dict[str, tuple[int, str]] = field(default_factory=dict)  # resolved path -> (line number, as written)

    def __contains__(self, path: str) -> bool:
        return _key(path) in self.lines

    def unknown(self, matched: Iterable[str]) -> list[tuple[int, str]]:
        """(line, path as written) of every listed path that is none of `matched` (the images left out), by line."""
        seen = {_key(p) for p in matched}
        return sorted(v for k, v in self.lines.items() if k not in seen)


def _key(path: str) -> str:
    return os.path.realpath(path)


def read(path: str, root: str) -> ExcludeList:
    """The exclude list in `path`, its relative paths taken relative to `root` (the data folder). Bytes that are
    not UTF-8 stand for themselves (file names are bytes on Linux)."""
    try:
        size = os.path.getsize(path)
        if os.path.isdir(path):
            raise ImgclassError(f"--exclude {path}: is a folder; pass a text file with one path per line")
        if size > MAX_BYTES:
            raise ImgclassError(f"--exclude {path}: {size / 1e6:.0f} MB is too large for a list of paths "
                                f"(at most {MAX_BYTES // 1024**2} MiB)")
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImgclassError(f"--exclude {path}: no such file") from None
    except OSError as e:
        raise ImgclassError(f"--exclude {path}: cannot read it ({e.strerror or e})") from None
    out = ExcludeList(path)
    for number, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            continue
        if b"\0" in raw:
            raise ImgclassError(f"--exclude {path}: line {number} holds a NUL byte; not a list of paths (one per line)")
        text = os.fsdecode(raw)
        out.lines.setdefault(_key(os.path.join(root, text)), (number, text))
    return out


def apply(samples: Sequence, excluded: ExcludeList | None) -> tuple[list, list]:
    """(kept, left out) samples: those whose path the list names are left out."""
    if excluded is None or not excluded.lines:
        return list(samples), []
    kept, out = [], []
    for s in samples:
        (out if s.path in excluded else kept).append(s)
    return kept, out


def unknown_message(excluded: ExcludeList, matched: Iterable[str], shown: int = 5) -> str | None:
    """One warning naming the listed paths that are not images of the data (the first few, then a count)."""
    missing = excluded.unknown(matched)
    if not missing:
        return None
    named = ", ".join(f"line {n}: {p}" for n, p in missing[:shown])
    more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
    return (f"--exclude {excluded.source}: {len(missing)} listed path(s) are not images of the data ({named}{more}); "
            "ignored")


def write(root: str, paths: Iterable[str]) -> tuple[bytes, list[str]]:
    """The bytes of an exclude list of `paths` (relative to `root` when inside it, else absolute), one per line,
    sorted; and the paths that cannot be written as a line (a newline in the name), left out of it."""
    lines, unfit = [], []
    for p in sorted(set(paths)):
        rel = os.path.relpath(p, root)
        name = p if rel.startswith(os.pardir + os.sep) or rel == os.pardir else rel
        if "\n" in name or "\r" in name:
            unfit.append(p)
            continue
        lines.append(os.fsencode(name) + b"\n")
    return b"".join(lines), unfit
