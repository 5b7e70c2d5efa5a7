"""Image quality: nearly black or white, low contrast, blurry, tiny, an extreme aspect ratio, grayscale in a colour
set. `measure` takes decoded images and gives a few numbers per image; `quality_issues` turns them (with the
header sizes) into findings. The thresholds are config.py's (docs/guide.md lists them); blur, size and aspect are
judged against the set's own median, so a set of small or soft images is not flagged as a whole."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from imgclass_cli import config
from imgclass_cli.data.findings import Finding

# Columns of measure()'s rows.
P05, CLIPPED, P99, STD, LAPLACIAN, SPREAD = range(6)
MEASURES = ("luma_p05", "clipped_share", "luma_p99", "luma_std", "laplacian_var", "colour_spread")
CLIP_LEVEL = 250  # a channel at or above this is clipped (blown highlights)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def luma(images: np.ndarray) -> np.ndarray:
    """(n, h, w, 3) RGB 0-255 -> (n, h, w) float32 luma (ITU-R BT.601)."""
    return np.asarray(images, dtype=np.float32) @ _LUMA


def measure(images: np.ndarray) -> np.ndarray:
    """(n, h, w, 3) RGB 0-255 -> (n, 6) float32: the 5th luma percentile, the share of pixels with a clipped
    channel, the 99th luma percentile, the luma standard deviation, the variance of the 4-neighbour Laplacian of
    the luma, and the mean channel spread |R-G| + |G-B| (0 for a gray image)."""
    x = np.asarray(images, dtype=np.float32)
    g = luma(x)
    flat = g.reshape(len(g), -1)
    p05, p99 = np.percentile(flat, [5, 99], axis=1)
    clipped = (x.max(axis=-1) >= CLIP_LEVEL).reshape(len(x), -1).mean(axis=1)
    lap = g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:] - 4 * g[:, 1:-1, 1:-1]
    spread = (np.abs(x[..., 0] - x[..., 1]) + np.abs(x[..., 1] - x[..., 2])).reshape(len(x), -1).mean(axis=1)
    return np.stack([p05, clipped, p99, flat.std(axis=1), lap.reshape(len(g), -1).var(axis=1), spread],
                    axis=1).astype(np.float32)


def thresholds(stats: np.ndarray, widths: Sequence[int], heights: Sequence[int]) -> dict:
    """Every threshold, those relative to the set resolved against its medians (what audit.json records)."""
    sizes = _sides(widths, heights)
    known = sizes[:, 0] > 0
    short = float(np.median(sizes[known, 0])) if known.any() else 0.0
    ratio = float(np.median(sizes[known, 1] / sizes[known, 0])) if known.any() else 1.0
    colour = float((stats[:, SPREAD] >= config.GRAY_SPREAD).mean()) if len(stats) else 1.0
    return {
        "dark_luma_p99_below": config.DARK_P99,
        "bright_luma_p05_above": config.BRIGHT_P05,
        "blown_out_clipped_share_above": config.BLOWN_SHARE,
        "low_contrast_luma_std_below": config.LOW_CONTRAST_STD,
        "blurry_laplacian_var_below": round(config.BLUR_FRACTION * float(np.median(stats[:, LAPLACIAN])), 3)
        if len(stats) else 0.0,
        "tiny_shorter_side_below": round(config.TINY_FRACTION * short, 1),
        "aspect_ratio_above": round(max(config.ASPECT_LIMIT, 2 * ratio), 3),
        "grayscale_colour_spread_below": config.GRAY_SPREAD if colour > 0.5 else None,  # None: not a colour set
    }


def _sides(widths: Sequence[int], heights: Sequence[int]) -> np.ndarray:
    """(n, 2): shorter and longer side from the header (0 when unknown)."""
    w, h = np.asarray(widths, dtype=np.float64), np.asarray(heights, dtype=np.float64)
    return np.stack([np.minimum(w, h), np.maximum(w, h)], axis=1)


def flat(stats: np.ndarray) -> np.ndarray:
    """Images with (almost) nothing in them: nearly black, nearly white or of very low contrast. Their blur, colour
    and perceptual hash mean nothing, so the other checks leave them out."""
    return (stats[:, P99] < config.DARK_P99) | (stats[:, P05] > config.BRIGHT_P05) | \
        (stats[:, STD] < config.LOW_CONTRAST_STD)


def quality_issues(stats: np.ndarray, widths: Sequence[int], heights: Sequence[int]) -> tuple[list[Finding], dict]:
    """Findings of every image (at most one of dark, bright and low contrast; blur and grayscale only for the
    others, blur not for tiny images), with scores in [0, 1] growing with how far past its threshold an image is;
    and the thresholds used."""
    t = thresholds(stats, widths, heights)
    sides = _sides(widths, heights)
    found = []
    for i, s in enumerate(stats):
        lighting = _lighting(i, s)
        if lighting is not None:
            found.append(lighting)
        short, long = sides[i]
        tiny = short > 0 and short < t["tiny_shorter_side_below"]
        if lighting is None:
            if s[LAPLACIAN] < t["blurry_laplacian_var_below"] and not tiny:  # a tiny image decodes blurry anyway
                found.append(_finding("blurry", i, s[LAPLACIAN], 1 - s[LAPLACIAN] / t["blurry_laplacian_var_below"]))
            if t["grayscale_colour_spread_below"] is not None and s[SPREAD] < config.GRAY_SPREAD:
                found.append(_finding("grayscale", i, s[SPREAD], 1 - s[SPREAD] / config.GRAY_SPREAD))
        if tiny:
            found.append(_finding("tiny", i, short, 1 - short / t["tiny_shorter_side_below"]))
        if short > 0 and long / short > t["aspect_ratio_above"]:
            found.append(_finding("aspect_ratio", i, long / short, 1 - t["aspect_ratio_above"] * short / long))
    return found, t


def _lighting(i: int, s: np.ndarray) -> Finding | None:
    if s[P99] < config.DARK_P99:
        return _finding("dark", i, s[P99], 1 - s[P99] / config.DARK_P99)
    if s[P05] > config.BRIGHT_P05:  # nearly white: scored by how close to white 95% of the picture is
        return _finding("bright", i, s[P05], (s[P05] - config.BRIGHT_P05) / (255 - config.BRIGHT_P05))
    if s[CLIPPED] > config.BLOWN_SHARE:  # blown out: most of the picture clipped; scored by how much
        return _finding("bright", i, s[CLIPPED], (s[CLIPPED] - config.BLOWN_SHARE) / (1 - config.BLOWN_SHARE))
    if s[STD] < config.LOW_CONTRAST_STD:
        return _finding("low_contrast", i, s[STD], 1 - s[STD] / config.LOW_CONTRAST_STD)
    return None


def _finding(kind: str, i: int, value, score) -> Finding:
    return Finding(kind, i, round(float(min(1.0, max(0.0, score))), 6), round(float(value), 4))
