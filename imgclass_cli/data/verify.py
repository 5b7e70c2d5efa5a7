"""Look at each image file once: content type, header (size, EXIF orientation), sha256, and a decode with the
training decoder. `screen` applies the result to a Dataset before any epoch starts (--on-bad-image)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from imgclass_cli.config import OnBadImage, Resize
from imgclass_cli.data import pipeline
from imgclass_cli.data.folders import Dataset
from imgclass_cli.data.imagefile import CHECK_SIZE, FileInfo, decode_error, probe_bytes, why_not_image
from imgclass_cli.errors import ImgclassError


def probe_file(path: str) -> tuple[FileInfo, bytes | None]:
    """Read a file and probe its header (imagefile.probe_bytes): (its FileInfo, its bytes; None if unreadable)."""
    try:
        with open(path, "rb") as f:
            contents = f.read()
    except OSError as e:
        return FileInfo(path=path).fail(why_not_image(path) if e.errno else f"cannot read: {e}"), None
    return probe_bytes(contents, path), contents


def check_file(path: str, *, decode: bool = True, digest: bool = True) -> FileInfo:
    """probe_bytes + sha256 + a decode with imagefile.decode, the decoder of training and prediction."""
    info, contents = probe_file(path)
    if contents is None:
        return info
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
           min_classes: int = 1, progress: Callable[[int, int], None] | None = None,
           image_size: int | None = None, resize: Resize | str = Resize.squash) -> Dataset:
    """Decode-check every sample before any epoch starts: skip (warn, naming each file) or fail on the first.

    One pass over the files: each is read once, its header probed (probe_file) in order, and its bytes decoded with
    the training decoder in parallel tf.data pipelines (pipeline.decode_all). With `image_size`, the decoded images
    are kept (data.images, uint8, resized the `resize` way) when they fit in memory, so the first epoch decodes nothing again; a prepared
    folder's samples were checked by prepare (data.verified): its bad files are reported, not probed, and its
    images are only decoded to be kept. A file that fails the decode is decoded once more on its own
    (imagefile.decode_error) for the reason. Sets each sample's EXIF orientation; returns the same Dataset with
    bad samples removed. progress(done, total) is called as files are done.
    """
    policy = OnBadImage(on_bad_image)
    known_bad = sorted(data.skipped)
    if policy == OnBadImage.fail and known_bad:
        raise ImgclassError(fail_message(*known_bad[0]))
    samples = [s for split in data.splits.values() for s in split]
    # A TFRecord folder's samples are records, not files: its pipeline reads (and caches) them itself.
    records = bool(samples) and samples[0].record is not None
    keep = image_size is not None and not records and pipeline.fits_in_memory(len(samples), image_size)
    bad: dict[str, str] = {}
    if not data.verified or keep:
        images = _decode_check(samples, data.verified, policy == OnBadImage.fail, image_size if keep else None,
                               bad, progress, Resize(resize))
        if images is not None:
            _keep_images(data, images, bad)
            data.image_resize = Resize(resize).value
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


def _decode_check(samples: list, verified: bool, fail: bool, keep_size: int | None, bad: dict[str, str],
                  progress, resize: Resize = Resize.squash) -> np.ndarray | None:
    """The one pass of screen(): probe (unless `verified`) and decode every sample, adding the bad ones to `bad`
    (raising at the first with `fail`). Returns the decoded images in sample order when `keep_size` is given."""
    # --on-bad-image fail names the first bad file in path order: check in that order and stop there.
    order = sorted(range(len(samples)), key=lambda i: samples[i].path) if fail else list(range(len(samples)))

    def item(j):
        s = samples[order[j]]
        if verified:
            return s.path, s.orientation, None
        info, contents = probe_file(s.path)
        if not info.ok:
            bad[s.path] = info.reason
            return None
        s.orientation, s.width, s.height = info.orientation, info.width, info.height
        return s.path, s.orientation, contents  # decoded from these bytes: the file is read once

    decoded, failed = pipeline.decode_all(len(samples), item, keep_size or CHECK_SIZE, keep=keep_size is not None,
                                          stop=lambda: fail and bool(bad), stop_on_error=fail, progress=progress,
                                          resize=resize if keep_size is not None else Resize.squash)
    for j in failed:  # in order: with fail, the first is the first bad file
        s = samples[order[j]]
        bad[s.path] = check_file(s.path, digest=False).reason or "cannot decode: unknown error"
        if fail:
            raise ImgclassError(fail_message(s.path, bad[s.path]))
    if fail and bad:
        raise ImgclassError(fail_message(*next(iter(bad.items()))))
    if keep_size is None:
        return None
    if not fail:
        return decoded
    images = np.empty_like(decoded)  # back to sample order
    images[order] = decoded
    return images


def _keep_images(data: Dataset, images, bad: dict[str, str]) -> None:
    """data.images[split]: the decoded images of each split's samples that are not bad, in sample order."""
    start = 0
    data.images = {}
    for split, split_samples in data.splits.items():
        block = images[start:start + len(split_samples)]
        start += len(split_samples)
        if bad:
            block = block[[s.path not in bad for s in split_samples]]
        data.images[split] = block
    data.image_size = images.shape[1]
