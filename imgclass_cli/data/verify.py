"""Look at each image file once: content type, header (size, EXIF orientation), sha256, and a decode with the
training decoder. `screen` applies the result to a Dataset before any epoch starts (--on-bad-image)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from imgclass_cli.config import OnBadImage
from imgclass_cli.data.folders import Dataset
from imgclass_cli.data.imagefile import FileInfo, decode_error, probe_bytes, why_not_image
from imgclass_cli.errors import ImgclassError


def check_file(path: str, *, decode: bool = True, digest: bool = True) -> FileInfo:
    """probe_bytes + sha256 + a decode with imagefile.decode, the decoder of training and prediction."""
    try:
        with open(path, "rb") as f:
            contents = f.read()
    except OSError as e:
        return FileInfo(path=path).fail(why_not_image(path) if e.errno else f"cannot read: {e}")
    info = probe_bytes(contents, path)
    if digest:
        info.sha256 = hashlib.sha256(contents).hexdigest()
    if info.ok and decode:
        err = decode_error(contents, info.orientation)
        if err:
            info.fail(err)
    return info


def check_files(paths: Iterable[str], *, decode: bool = True, digest: bool = True, workers: int | None = None,
                on_done: Callable[[FileInfo], None] | None = None) -> list[FileInfo]:
    """check_file over many paths in parallel threads (TF and Pillow release the GIL), results in input order."""
    paths = list(paths)
    workers = workers or min(4, os.cpu_count() or 1)
    if decode and paths:
        from imgclass_cli._tf import tf

        tf()  # import TensorFlow once, before the threads race to do it
    out = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for info in pool.map(lambda p: check_file(p, decode=decode, digest=digest), paths):
            out.append(info)
            if on_done:
                on_done(info)
    return out


def first_bad(paths: Iterable[str]) -> FileInfo | None:
    """The first file (in order) that fails check_file; stops there (--on-bad-image fail)."""
    for p in paths:
        info = check_file(p, digest=False)
        if not info.ok:
            return info
    return None


def fail_message(path: str, reason: str) -> str:
    return f"{path}: {reason} (--on-bad-image fail; use --on-bad-image skip to leave bad files out)"


def screen(data: Dataset, on_bad_image: OnBadImage | str, warn: Callable[[str], None],
           min_classes: int = 1, progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Decode-check every sample before any epoch starts: skip (warn, naming each file) or fail on the first.

    A prepared folder's samples were checked by prepare (data.verified): its bad files are reported, not decoded.
    Sets each sample's EXIF orientation. Returns the same Dataset with bad samples removed.
    progress(done, total) is called after each decoded file.
    """
    policy = OnBadImage(on_bad_image)
    known_bad = sorted(data.skipped)
    if policy == OnBadImage.fail and known_bad:
        raise ImgclassError(fail_message(*known_bad[0]))
    samples = [s for split in data.splits.values() for s in split]
    bad: dict[str, str] = {}
    total = len(samples)
    tick = progress or (lambda done, total: None)
    if not data.verified:
        if policy == OnBadImage.fail:
            for i, s in enumerate(sorted(samples, key=lambda s: s.path), 1):
                info = check_file(s.path, digest=False)
                tick(i, total)
                if not info.ok:
                    raise ImgclassError(fail_message(s.path, info.reason))
                s.orientation = info.orientation
        else:
            done = iter(range(1, total + 1))
            infos = check_files([s.path for s in samples], digest=False, on_done=lambda _: tick(next(done), total))
            for s, info in zip(samples, infos):
                if info.ok:
                    s.orientation = info.orientation
                else:
                    bad[s.path] = info.reason
    for path, reason in known_bad + sorted(bad.items()):
        warn(f"skipping {path}: {reason}")
    if bad:
        data.splits = {k: [s for s in v if s.path not in bad] for k, v in data.splits.items()}
        data.skipped = known_bad + sorted(bad.items())
        left = {s.label for split in data.splits.values() for s in split}
        if len(left) < min_classes:
            raise ImgclassError(f"{data.root}: fewer than {min_classes} classes have readable images after skipping "
                                f"{len(bad)} bad file(s)")
    return data
