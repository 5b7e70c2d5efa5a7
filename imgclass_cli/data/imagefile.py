"""One image file: its format by content, its header (size, mode, EXIF orientation, limits), why a file is not
an image we read, and the one decoder of the project (training, checks, prediction and export all use `decode`)."""

from __future__ import annotations

import errno
import io
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np

from imgclass_cli._tf import tf
from imgclass_cli.errors import first_line
from imgclass_cli.config import MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE, RESIZE_ANTIALIAS, RESIZE_INTERPOLATION, Resize

CHECK_SIZE = 16  # decode-checks resize to this: the decode is the test, the pixels are thrown away
EXIF_ORIENTATION = 0x0112
# Where Pillow finds a PNG's orientation: an eXIf chunk, ImageMagick's text chunk, XMP (tiff:Orientation). The
# keywords are never compressed, so a PNG without any of them has no orientation to read.
PNG_ORIENTATION_KEYS = (b"eXIf", b"Raw profile type exif", b"XML:com.adobe.xmp")

# File signatures of the formats the decoder reads; files are recognised by content, not by extension.
_SIGNATURES = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)


def sniff_format(path: str) -> str | None:
    """The image format of a file from its first bytes, or None if it is not an image we decode."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return sniff_bytes(head)


def sniff_bytes(head: bytes) -> str | None:
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    return None


def why_not_image(path: str) -> str:
    """A one-phrase reason why sniff_format(path) is None: empty, unreadable, a symlink loop, another format."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop (too many levels of symbolic links)"
        return f"cannot read: {e.strerror or e}"
    if size == 0:
        return "empty file (0 bytes)"
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic) or (name == "WebP" and head[8:12] == b"WEBP"):
            return f"unsupported image format {name} (imgclass reads JPEG, PNG, GIF and BMP)"
    return "not an image (JPEG, PNG, GIF or BMP) by content"


_OTHER_FORMATS = ((b"RIFF", "WebP"), (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"), (b"\0\0\0\x0cjP", "JPEG 2000"),
                  (b"8BPS", "PSD"), (b"\0\0\1\0", "ICO"))


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


# The 8-bit PNG colour types and the Pillow mode each opens as; ancillary chunks that may come before the pixels.
_PNG_MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}
_PNG_PLAIN_CHUNKS = frozenset((b"PLTE", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"pHYs", b"sBIT", b"bKGD", b"tIME",
                               b"tEXt"))


def _plain_png(contents: bytes) -> tuple[int, int, str] | None:
    """(width, height, Pillow mode) of a plain PNG, read without Pillow; None for anything else, which then goes to
    Pillow (and gets its messages). Plain: an 8-bit non-interlaced IHDR, then only chunks from _PNG_PLAIN_CHUNKS,
    each whole and with a correct CRC, up to the first IDAT; no orientation (PNG_ORIENTATION_KEYS); within the
    pixel limit. Pillow's open spends about 60% of the header probe on such files (60,000 Fashion-MNIST PNGs: about
    2.5 of 4.5 s); what it would check there, this checks too."""
    if len(contents) < 45 or contents[12:16] != b"IHDR" or contents[8:12] != b"\0\0\0\r":
        return None
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", contents[16:29])
    if (depth != 8 or colour not in _PNG_MODES or compression or filtering or interlace or not width or not height
            or width * height > MAX_IMAGE_PIXELS or zlib.crc32(contents[12:29]) != struct.unpack(">I", contents[29:33])[0]
            or any(key in contents for key in PNG_ORIENTATION_KEYS)):
        return None
    pos = 33
    while pos + 12 <= len(contents):
        length, kind = struct.unpack(">I4s", contents[pos:pos + 8])
        if kind == b"IDAT":
            return width, height, _PNG_MODES[colour]
        end = pos + 8 + length
        if kind not in _PNG_PLAIN_CHUNKS or end + 4 > len(contents) or \
                zlib.crc32(contents[pos + 4:end]) != struct.unpack(">I", contents[end:end + 4])[0]:
            return None
        pos = end + 4
    return None


def probe_bytes(contents: bytes, path: str = "") -> FileInfo:
    """Header-only check (no pixel decode): format by content, size, mode, frames, EXIF orientation, limits."""
    info = FileInfo(path=path, bytes=len(contents))
    if not contents:
        return info.fail("empty file (0 bytes)")
    info.format = sniff_bytes(contents[:16])
    if info.format is None:
        return info.fail(why_not_image(path) if path else "not an image (JPEG, PNG, GIF or BMP) by content")
    plain = _plain_png(contents) if info.format == "png" else None
    if plain is not None:
        info.width, info.height, info.mode = plain
        return _within_limits(info)
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(contents))
            info.width, info.height = im.size
            info.mode = im.mode
            info.frames = getattr(im, "n_frames", 1) if info.format == "gif" else 1
            try:
                if info.format == "png" and not any(key in contents for key in PNG_ORIENTATION_KEYS):
                    o = 1  # nothing to find: Pillow's getexif would decode the whole PNG to look past its pixels
                else:
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
        return info.fail(f"cannot decode: broken {info.format.upper()} header ({first_line(e)})")
    return _within_limits(info)


def _within_limits(info: FileInfo) -> FileInfo:
    w, h = info.width, info.height
    if w * h > MAX_IMAGE_PIXELS:
        return info.fail(f"{w}x{h} pixels ({w * h / 1e6:.0f} megapixels): over the "
                         f"{MAX_IMAGE_PIXELS // 1_000_000}-megapixel limit, not decoded (downscale it first)")
    if min(w, h) < MIN_IMAGE_SIDE:
        return info.fail(f"{w}x{h} pixels: below the {MIN_IMAGE_SIDE}-pixel minimum (a placeholder?)")
    return info


def decode(contents, image_size: int, orientation=1, resize: Resize | str = Resize.squash):
    """Bytes of a JPEG/PNG/GIF/BMP -> uint8 (image_size, image_size, 3). The one decoder of the project.

    Grayscale and RGBA become RGB, a GIF gives its first frame; resizing is bilinear with antialiasing,
    exactly like the Resizing layer inside every saved model: squash (the whole image to the square), crop (the
    centred square) or pad (black bars), with Keras' own resize for crop and pad, so the box is the layer's to
    the pixel. `orientation` is the EXIF orientation (1-8, read from the header by imagefile.probe_bytes), applied
    after the resize: rotations and flips of a square commute with the resize and cost nothing at that size (with
    crop and pad, an odd difference of the sides puts the box one pixel off the centre the other way).
    """
    t = tf()
    mode = Resize(resize)
    img = t.io.decode_image(contents, channels=3, expand_animations=False, dtype=t.uint8)
    img.set_shape([None, None, 3])

    def resize_():
        if mode == Resize.squash:
            out = t.image.resize(img, [image_size, image_size], antialias=RESIZE_ANTIALIAS)
        else:
            from imgclass_cli._tf import keras

            out = keras().ops.image.resize(t.cast(img, t.float32), (image_size, image_size),
                                           interpolation=RESIZE_INTERPOLATION, antialias=RESIZE_ANTIALIAS,
                                           crop_to_aspect_ratio=mode == Resize.crop,
                                           pad_to_aspect_ratio=mode == Resize.pad)
        return t.cast(t.clip_by_value(t.round(out), 0, 255), t.uint8)

    # An image already at the size is kept as it is: the bilinear resize to the same size is the identity
    # (tests/test_pipeline.py checks that it stays so), and skipping it doubles the decode rate of small images
    # (Fashion-MNIST's 28 px PNGs: 1,900 -> 3,700 files/s on 2 cores).
    shape = t.shape(img)
    img = t.cond(t.logical_and(shape[0] == image_size, shape[1] == image_size), lambda: img, resize_)
    img = t.ensure_shape(img, [image_size, image_size, 3])
    return apply_orientation(img, orientation)


def decode_upright(contents, orientation=1) -> np.ndarray:
    """Bytes of a JPEG/PNG/GIF/BMP -> uint8 (height, width, 3) at the image's own size, turned upright per its EXIF
    orientation: the picture a person sees (explain's overlays). The same decode as `decode`, without the resize."""
    t = tf()
    img = t.io.decode_image(contents, channels=3, expand_animations=False, dtype=t.uint8)
    return np.asarray(apply_orientation(img, orientation))


def apply_orientation(img, orientation):
    """Turn a stored square image upright per its EXIF orientation, like Pillow's ImageOps.exif_transpose."""
    t = tf()
    if isinstance(orientation, (int, np.integer)):
        if orientation in (None, 1) or not 1 <= orientation <= 8:
            return img
        orientation = t.constant(orientation)
    transpose = lambda x: t.transpose(x, [1, 0, 2])  # noqa: E731
    branches = [
        lambda: img,
        lambda: t.image.flip_left_right(img),
        lambda: t.image.rot90(img, 2),
        lambda: t.image.flip_up_down(img),
        lambda: transpose(img),
        lambda: t.image.rot90(img, 3),
        lambda: t.image.rot90(transpose(img), 2),
        lambda: t.image.rot90(img, 1),
    ]
    index = t.clip_by_value(t.cast(orientation, t.int32) - 1, 0, 7)
    return t.switch_case(index, branches)


def decode_error(contents: bytes, orientation: int = 1) -> str | None:
    t = tf()
    try:
        decode(t.constant(contents), CHECK_SIZE, orientation)
    except (t.errors.InvalidArgumentError, t.errors.OpError) as e:
        return f"cannot decode: {clean_tf_message(getattr(e, 'message', str(e)))}"
    return None


def clean_tf_message(msg: str) -> str:
    """'{{function_node ...}} jpeg::Uncompress failed. Invalid JPEG data or crop window. [Op:DecodeImage]' -> the middle."""
    msg = re.sub(r"\{\{[^}]*\}\}", "", first_line(msg))
    msg = re.sub(r"\s*\[Op:\w+\]", "", msg)
    msg = re.sub(r"\s*name:\s*$", "", msg).strip()
    if "jpeg::Uncompress failed" in msg:
        return "truncated or corrupt JPEG (" + msg + ")"
    return msg or "unknown error"
