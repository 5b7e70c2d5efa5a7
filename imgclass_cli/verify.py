"""Look at each image file once: content type, header (size, EXIF orientation), sha256, and a decode with the
training decoder. `screen` applies the result to a Dataset before any epoch starts (--on-bad-image)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from imgclass_cli import dataset
from imgclass_cli.config import MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE, OnBadImage
from imgclass_cli.errors import ImgclassError

CHECK_SIZE = 16  # decode-checks resize to this: the decode is the test, the pixels are thrown away
EXIF_ORIENTATION = 0x0112


@dataclass
class FileInfo:
    path: str
    status: str = "ok"  # ok | bad
    reason: str = ""
    format: str | None = None  # jpeg | png | gif | bmp (by content)
    width: int = 0
    height: int = 0
    mode: str = ""  # Pillow mode of the file: RGB, L, P, RGBA, CMYK, I;16 ...
    frames: int = 1
    orientation: int = 1
    sha256: str = ""
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fail(self, reason: str) -> "FileInfo":
        self.status, self.reason = "bad", reason
        return self


def probe_bytes(contents: bytes, path: str = "") -> FileInfo:
    """Header-only check (no pixel decode): format by content, size, mode, frames, EXIF orientation, limits."""
    info = FileInfo(path=path, bytes=len(contents))
    if not contents:
        return info.fail("empty file (0 bytes)")
    info.format = dataset.sniff_bytes(contents[:16])
    if info.format is None:
        return info.fail(dataset.why_not_image(path) if path else "not an image (JPEG, PNG, GIF or BMP) by content")
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(contents))
            info.width, info.height = im.size
            info.mode = im.mode
            info.frames = getattr(im, "n_frames", 1) if info.format == "gif" else 1
            try:
                o = int(im.getexif().get(EXIF_ORIENTATION, 1))
            except Exception:  # a broken EXIF block is not worth refusing the image for; TF ignores EXIF
                o = 1
            info.orientation = o if 1 <= o <= 8 else 1
    except Image.DecompressionBombError as e:
        m = re.search(r"\((\d+) pixels\)", str(e))
        mp = f"{int(m.group(1)) / 1e6:.0f} megapixels" if m else "too many pixels"
        return info.fail(f"{mp}: over the {MAX_IMAGE_PIXELS // 1_000_000}-megapixel limit, not decoded "
                         "(downscale it first)")
    except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError from a broken header
        return info.fail(f"cannot decode: broken {info.format.upper()} header ({_first_line(e)})")
    w, h = info.width, info.height
    if w * h > MAX_IMAGE_PIXELS:
        return info.fail(f"{w}x{h} pixels ({w * h / 1e6:.0f} megapixels): over the "
                         f"{MAX_IMAGE_PIXELS // 1_000_000}-megapixel limit, not decoded (downscale it first)")
    if min(w, h) < MIN_IMAGE_SIDE:
        return info.fail(f"{w}x{h} pixels: below the {MIN_IMAGE_SIDE}-pixel minimum (a placeholder?)")
    return info


def check_file(path: str, *, decode: bool = True, digest: bool = True) -> FileInfo:
    """probe_bytes + sha256 + a decode with pipeline.decode, the decoder of training and prediction."""
    try:
        with open(path, "rb") as f:
            contents = f.read()
    except OSError as e:
        return FileInfo(path=path).fail(dataset.why_not_image(path) if e.errno else f"cannot read: {e}")
    info = probe_bytes(contents, path)
    if digest:
        info.sha256 = hashlib.sha256(contents).hexdigest()
    if info.ok and decode:
        err = decode_error(contents, info.orientation)
        if err:
            info.fail(err)
    return info


def decode_error(contents: bytes, orientation: int = 1) -> str | None:
    from imgclass_cli import pipeline
    from imgclass_cli._tf import tf

    t = tf()
    try:
        pipeline.decode(t.constant(contents), CHECK_SIZE, orientation)
    except (t.errors.InvalidArgumentError, t.errors.OpError) as e:
        return f"cannot decode: {clean_tf_message(getattr(e, 'message', str(e)))}"
    return None


def clean_tf_message(msg: str) -> str:
    """'{{function_node ...}} jpeg::Uncompress failed. Invalid JPEG data or crop window. [Op:DecodeImage]' -> the middle."""
    msg = re.sub(r"\{\{[^}]*\}\}", "", _first_line(msg))
    msg = re.sub(r"\s*\[Op:\w+\]", "", msg)
    msg = re.sub(r"\s*name:\s*$", "", msg).strip()
    if "jpeg::Uncompress failed" in msg:
        return "truncated or corrupt JPEG (" + msg + ")"
    return msg or "unknown error"


def _first_line(e) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def check_files(paths: Iterable[str], *, decode: bool = True, digest: bool = True, workers: int | None = None,
                on_done: Callable[[FileInfo], None] | None = None) -> list[FileInfo]:
    """check_file over many paths in parallel threads (TF and Pillow release the GIL), results in input order."""
    paths = list(paths)
    workers = workers or min(4, os.cpu_count() or 1)
    if decode and paths:
        from imgclass_cli import pipeline  # noqa: F401 - import TensorFlow once, before the threads race to do it
        from imgclass_cli._tf import tf

        tf()
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


def screen(data: dataset.Dataset, on_bad_image: OnBadImage | str, warn: Callable[[str], None],
           min_classes: int = 1) -> dataset.Dataset:
    """Decode-check every sample before any epoch starts: skip (warn, naming each file) or fail on the first.

    A prepared folder's samples were checked by prepare (data.verified): its bad files are reported, not decoded.
    Sets each sample's EXIF orientation. Returns the same Dataset with bad samples removed.
    """
    policy = OnBadImage(on_bad_image)
    known_bad = sorted(data.skipped)
    if policy == OnBadImage.fail and known_bad:
        raise ImgclassError(fail_message(*known_bad[0]))
    samples = [s for split in data.splits.values() for s in split]
    bad: dict[str, str] = {}
    if not data.verified:
        if policy == OnBadImage.fail:
            for s in sorted(samples, key=lambda s: s.path):
                info = check_file(s.path, digest=False)
                if not info.ok:
                    raise ImgclassError(fail_message(s.path, info.reason))
                s.orientation = info.orientation
        else:
            for s, info in zip(samples, check_files([s.path for s in samples], digest=False)):
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
