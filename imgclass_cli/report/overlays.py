"""The pictures of Grad-CAM: a heatmap laid over its image, an image and its overlay side by side, explain's labelled
PNG and evaluate's `mistakes.png` grid. Pixels and text with numpy and Pillow (in DejaVu Sans, matplotlib's font:
many scripts; a tenth of the time a matplotlib figure takes), matplotlib's colour map."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from imgclass_cli.report.output import visible

HEAT_ALPHA = 0.5  # the heatmap's weight over the image: enough to read it, not so much that the image is lost
COLORMAP = "jet"  # the usual Grad-CAM colours: blue (nothing) to red (the most)
GAP = 4  # pixels between an image and its overlay


def _colormap():
    import matplotlib

    return matplotlib.colormaps[COLORMAP]


def resized(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """An image (uint8, H x W x 3) or a heatmap (float32, H x W) at height x width: nearest neighbour when
    enlarging (a 28 px image stays crisp), area averaging when reducing."""
    from PIL import Image

    if array.shape[:2] == (height, width):
        return array
    enlarge = height >= array.shape[0] and width >= array.shape[1]
    if array.ndim == 2:
        pic = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
        return np.asarray(pic.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    pic = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    return np.asarray(pic.resize((width, height), Image.Resampling.NEAREST if enlarge else Image.Resampling.BOX))


def display_size(height: int, width: int, smallest: int = 112, largest: int = 224) -> tuple[int, int]:
    """(height, width) for showing an image: the longer side enlarged to `smallest` or reduced to `largest` (by a
    whole factor when enlarging, so pixels stay square blocks), the aspect ratio kept."""
    longer = max(height, width, 1)
    if longer < smallest:
        factor = float(-(-smallest // longer))
    elif longer > largest:
        factor = largest / longer
    else:
        factor = 1.0
    return max(1, round(height * factor)), max(1, round(width * factor))


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = HEAT_ALPHA) -> np.ndarray:
    """The heatmap (0..1, the image's height x width) in colour over the image: uint8 H x W x 3."""
    heat = _colormap()(np.clip(heatmap, 0.0, 1.0))[..., :3] * 255.0
    return np.clip((1 - alpha) * image.astype(np.float32) + alpha * heat, 0, 255).astype(np.uint8)


def pair(image: np.ndarray, heatmap: np.ndarray | None, height: int | None = None, width: int | None = None):
    """(image, overlay) at the display size (display_size unless given), uint8; overlay None without a heatmap."""
    if height is None or width is None:
        height, width = display_size(*image.shape[:2])
    shown = resized(image, height, width)
    if heatmap is None:
        return shown, None
    return shown, overlay(shown, resized(heatmap, height, width))


def side_by_side(left: np.ndarray, right: np.ndarray | None) -> np.ndarray:
    """Two images of the same height in one, with a white gap (the left one alone without a right one)."""
    if right is None:
        return left
    gap = np.full((left.shape[0], GAP, 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def png(array: np.ndarray) -> bytes:
    """An image array as PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _font(size: int):
    """DejaVu Sans (matplotlib ships it: many scripts), else Pillow's own font."""
    import os

    import matplotlib
    from PIL import ImageFont

    try:
        return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), size)
    except OSError:
        return ImageFont.load_default()


def _fitted(line: str, font, width: int) -> str:
    """The line, cut with an ellipsis in the middle to fit `width` pixels (a long path keeps its file name)."""
    if font.getlength(line) <= width:
        return line
    keep = len(line)
    while keep > 1 and font.getlength(line[:keep // 2] + "…" + line[len(line) - (keep - keep // 2):]) > width:
        keep -= 1
    return line[:keep // 2] + "…" + line[len(line) - (keep - keep // 2):]


def labelled(picture: np.ndarray, lines: list[str], size: int = 12, width: int | None = None) -> np.ndarray:
    """The picture with lines of text above it on white, `width` pixels wide (at least the picture's)."""
    from PIL import Image, ImageDraw

    font = _font(size)
    pad, step = 4, size + 4
    width = max(width or 0, picture.shape[1])
    canvas = Image.new("RGB", (width, pad + step * len(lines) + picture.shape[0]), "white")
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((0, pad + k * step), _fitted(visible(line), font, width), fill=(20, 20, 20), font=font)
    canvas.paste(Image.fromarray(picture), (0, pad + step * len(lines)))
    return np.asarray(canvas)


def explain_png(image: np.ndarray, heatmap: np.ndarray, lines: list[str]) -> bytes:
    """explain's picture: the image and its Grad-CAM overlay side by side (256 to 512 px a side), the lines above."""
    shown, over = pair(image, heatmap, *display_size(*image.shape[:2], smallest=256, largest=512))
    return png(labelled(side_by_side(shown, over), lines, size=14, width=2 * 256 + GAP))


@dataclass
class Cell:
    """One picture of a grid: an image with its overlay (or none), and lines of text above it."""

    image: np.ndarray
    heatmap: np.ndarray | None
    lines: list[str]


def grid_png(cells: list[Cell], title: str = "", columns: int = 6, empty: str = "nothing to show") -> bytes:
    """Cells in rows of `columns` (each an image beside its overlay, its lines above), titled, as PNG bytes:
    evaluate's mistakes.png."""
    side = 112
    pictures = [labelled(side_by_side(*pair(c.image, c.heatmap, *display_size(*c.image.shape[:2], side, side))),
                         c.lines, size=11, width=2 * side + GAP) for c in cells]
    if not pictures:
        return png(labelled(np.full((8, 320, 3), 255, np.uint8), [title, empty] if title else [empty], size=13))
    columns = max(1, min(columns, len(pictures)))
    h, w, margin = max(p.shape[0] for p in pictures), max(p.shape[1] for p in pictures), 12
    rows = -(-len(pictures) // columns)
    sheet = np.full((rows * (h + margin) + margin, columns * (w + margin) + margin, 3), 255, np.uint8)
    for k, p in enumerate(pictures):
        top, left = margin + (k // columns) * (h + margin), margin + (k % columns) * (w + margin)
        sheet[top:top + p.shape[0], left:left + p.shape[1]] = p
    return png(labelled(sheet, [title], size=14) if title else sheet)
