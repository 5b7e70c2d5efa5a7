"""Near-duplicates: pictures that are the same photo re-encoded, resized, slightly cropped or recoloured, found by
perceptual hashes (NumPy) and a multi-index hash table that stays sub-quadratic.

Each image's 64x64 luma thumbnail gives 28 views: the whole image and 27 crops (3.3%, 6.7% and 10% off, at
3 x 3 positions),
each resampled to 32x32. Per view, a 64-bit coarse hash (the signs of the 8x8 lowest DCT frequencies against their
median, as pHash) and a 256-bit fine hash (16x16 frequencies). Two images are candidates when a view of one is within
`coarse_bits` of the other's whole-image coarse hash, and a pair when the fine hash of a view of either is within
`fine_bits` of the other's whole image: a copy cropped by up to 10% matches one of the crops of its original. Candidates come from a multi-index table (Norouzi
et al., 2012): the whole-image coarse hashes split into 4 chunks of 16 bits; two hashes within 7 bits agree within
1 bit on at least one chunk, so each view probes 4 x 17 buckets. Work grows with n x (n / 65,536) for hashes spread
over the buckets: 100,000 images in seconds (docs/benchmarks.md, "Audit").
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from imgclass_cli.data.findings import Finding, groups, pair_kind  # noqa: F401 - groups: for callers

THUMB = 64  # the luma thumbnail hashes are computed from (callers resize to it, antialiased)
_VIEW = 32  # each view is resampled to 32x32 before its DCT
_CHUNKS, _CHUNK_BITS = 4, 16
_FINE_WORDS = 4  # 256 bits
_MAX_CANDIDATES = 4_000_000  # per expansion: bounds the memory of a block of queries


def _boxes() -> np.ndarray:
    """(28, 4) views as fractions (top, left, bottom, right): the whole image, then crops of 1/30, 2/30 and 3/30
    (10%) at 3 x 3 positions (flush top/left, centred, flush bottom/right)."""
    boxes = [(0.0, 0.0, 1.0, 1.0)]
    for f in (1 / 30, 2 / 30, 3 / 30):
        for oy, ox in itertools.product((0.0, f / 2, f), repeat=2):
            boxes.append((oy, ox, oy + 1 - f, ox + 1 - f))
    return np.array(boxes, dtype=np.float64)


BOXES = _boxes()
VIEWS = len(BOXES)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


_DCT = _dct_matrix(_VIEW)


def _sampling(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear resampling of each view as matrices: (V, 32, size) along y and along x, so that view v of an image
    g is Y[v] @ g @ X[v].T (crop and resize are linear and separable)."""
    out = []
    for lo_col, hi_col in ((0, 2), (1, 3)):
        start, stop = BOXES[:, lo_col:lo_col + 1] * size, BOXES[:, hi_col:hi_col + 1] * size
        centres = np.clip(start + (np.arange(_VIEW) + 0.5) * (stop - start) / _VIEW - 0.5, 0, size - 1)
        lo = np.floor(centres).astype(np.intp)
        hi = np.minimum(lo + 1, size - 1)
        w = centres - lo
        m = np.zeros((VIEWS, _VIEW, size))
        v, k = np.meshgrid(np.arange(VIEWS), np.arange(_VIEW), indexing="ij")
        np.add.at(m, (v, k, lo), 1 - w)
        np.add.at(m, (v, k, hi), w)
        out.append(m)
    return out[0], out[1]


_Y, _X = _sampling(THUMB)
# The 16x16 lowest DCT frequencies of every view, straight from the thumbnail: A[v] @ g @ B[v].T.
_A = (_DCT[:16] @ _Y).astype(np.float32)  # (V, 16, 64)
_B = (_DCT[:16] @ _X).astype(np.float32)
_B_ALL = np.ascontiguousarray(_B.transpose(2, 0, 1).reshape(THUMB, VIEWS * 16))  # column v*16+j: B[v][j]


def views(thumbs: np.ndarray) -> np.ndarray:
    """(n, 64, 64) luma thumbnails -> (n, 28, 32, 32) views (bilinear): for looking at them; hashes() goes to the
    DCT directly."""
    g = np.asarray(thumbs, dtype=np.float32)
    return np.einsum("vky,nyx,vjx->nvkj", _Y.astype(np.float32), g, _X.astype(np.float32), optimize=True)


def _signs(block: np.ndarray) -> np.ndarray:
    """(..., k, k) DCT coefficients -> (..., k*k/64) uint64: each bit says a coefficient is above the median of
    the block's frequencies other than the mean (the pHash rule)."""
    flat = block.reshape(*block.shape[:-2], -1)
    median = np.median(flat[..., 1:], axis=-1, keepdims=True)
    packed = np.packbits(flat > median, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8")


def hashes(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 64, 64) luma thumbnails -> coarse hashes (n, 28) uint64 and fine hashes (n, 28, 4) uint64, view 0 the
    whole image."""
    g = np.asarray(thumbs, dtype=np.float32)
    n = len(g)
    # g @ B[v].T for every view at once, as one 2-D product (NumPy's stacked matmul is many times slower here).
    right = g.reshape(n * THUMB, THUMB) @ _B_ALL  # (n*64, V*16)
    right = right.reshape(n, THUMB, VIEWS, 16).transpose(0, 2, 1, 3)  # (n, V, 64, 16)
    c16 = _A[None] @ right  # (n, V, 16, 16)
    return _signs(c16[..., :8, :8])[..., 0], _signs(c16)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
    return table[x[..., None].view(np.uint8)].sum(-1)


class Index:
    """The multi-index table over the whole-image coarse hashes of the searchable images."""

    def __init__(self, full: np.ndarray, coarse_bits: int):
        if coarse_bits >= 2 * _CHUNKS:
            raise ValueError(f"coarse_bits {coarse_bits}: the table finds pairs within {2 * _CHUNKS - 1} bits")
        self.full = np.asarray(full, dtype=np.uint64)
        self.bits = coarse_bits
        self.tables = []
        for c in range(_CHUNKS):
            key = self.chunk(self.full, c)
            self.tables.append((np.argsort(key, kind="stable"),
                                np.concatenate([[0], np.cumsum(np.bincount(key, minlength=1 << _CHUNK_BITS))])))
        self.probes = np.array([0] + [1 << b for b in range(_CHUNK_BITS)], dtype=np.int64)

    @staticmethod
    def chunk(h: np.ndarray, c: int) -> np.ndarray:
        return ((h >> np.uint64(_CHUNK_BITS * c)) & np.uint64((1 << _CHUNK_BITS) - 1)).astype(np.int64)

    def candidates(self, queries: np.ndarray):
        """Yield (query positions, table positions) whose coarse hashes are within `bits`, in bounded blocks."""
        for c, (order, starts) in enumerate(self.tables):
            qkey = self.chunk(queries, c)
            for probe in self.probes:
                k = qkey ^ probe
                lo, count = starts[k], starts[k + 1] - starts[k]
                yield from self._expand(queries, order, lo, count)

    def _expand(self, queries, order, lo, count):
        ends = np.cumsum(count)
        start = 0
        while start < len(count):  # split where the candidates would exceed _MAX_CANDIDATES
            base = ends[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(ends, base + _MAX_CANDIDATES, side="right")))
            cnt = count[start:stop]
            q = np.repeat(np.arange(start, stop), cnt)
            offs = np.arange(len(q)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            items = order[np.repeat(lo[start:stop], cnt) + offs]
            near = popcount(queries[q] ^ self.full[items]) <= self.bits
            yield q[near], items[near]
            start = stop


def find_pairs(coarse: np.ndarray, fine: np.ndarray, *, coarse_bits: int, sure_bits: int, fine_bits: int,
               ratio: float, searchable: np.ndarray | None = None, block: int = 2048) -> np.ndarray:
    """Pairs of near-duplicate images among the searchable ones: (m, 3) int64 rows (i, j, fine distance), i < j,
    sorted by distance then i, j.

    Candidates: a view of one image within `coarse_bits` of the other's whole image (coarse hashes, through the
    table). Their fine distance is the smallest over every view of either against the other's whole image. A
    candidate within `sure_bits` is a pair; one within `fine_bits` is a pair when it is also closer than `ratio`
    times the nearest other candidate of either image (Lowe's ratio test): in a set of look-alike images (centred
    products on a plain background) many candidates are close, and only a pair far closer than its neighbours is
    the same picture."""
    cands = _candidates(coarse, fine, coarse_bits, candidate_bits(fine_bits, ratio), searchable, block)
    return accept(cands, len(coarse), sure_bits=sure_bits, fine_bits=fine_bits, ratio=ratio)


def candidate_bits(fine_bits: int, ratio: float) -> int:
    """The fine distance beyond which a candidate can neither be a pair nor make the ratio test of another fail."""
    return int(fine_bits / ratio) if ratio > 0 else fine_bits


def accept(cands: np.ndarray, n: int, *, sure_bits: int, fine_bits: int, ratio: float) -> np.ndarray:
    """The pairs among candidates (i < j, fine distance) of n images: within sure_bits, or within fine_bits and
    ratio times the nearest other candidate of either image."""
    d = cands[:, 2]
    background = _background(cands, n)
    accepted = (d <= sure_bits) | ((d <= fine_bits) & (d <= ratio * background))
    return _unique_pairs(cands[accepted])


def _candidates(coarse, fine, coarse_bits: int, keep_bits: int, searchable, block: int) -> np.ndarray:
    """Every candidate pair (i < j, fine distance) within keep_bits, once."""
    n = len(coarse)
    ids = np.arange(n) if searchable is None else np.flatnonzero(searchable)
    index = Index(coarse[ids, 0], coarse_bits)
    found = []
    for b in range(0, len(ids), block):
        q_ids = ids[b:b + block]
        queries = coarse[q_ids].reshape(-1)  # every view of every image of the block
        candidates = []
        for q, t in index.candidates(queries):
            a, other = q_ids[q // VIEWS], ids[t]
            keep = a != other
            candidates.append(np.stack([np.minimum(a, other)[keep], np.maximum(a, other)[keep]], axis=1))
        if candidates:
            pairs = np.unique(np.concatenate(candidates), axis=0)
            d = fine_distance(fine, pairs[:, 0], pairs[:, 1])
            found.append(np.concatenate([pairs, d[:, None]], axis=1)[d <= keep_bits])
    rows = np.concatenate(found) if found else np.zeros((0, 3), np.int64)
    return _unique_pairs(rows)  # a pair seen from two blocks (a in one, b in the other) once


def _background(cands: np.ndarray, n: int) -> np.ndarray:
    """For each candidate (a, b): the fine distance of the nearest other candidate of a or of b (128, unrelated,
    when there is none)."""
    best = np.full((n, 2), 128, dtype=np.int64)  # the two smallest distances of each image
    partner = np.full(n, -1, dtype=np.int64)  # the image at the smallest
    ends = np.concatenate([cands[:, [0, 1, 2]], cands[:, [1, 0, 2]]])
    ends = ends[np.lexsort((ends[:, 2], ends[:, 0]))]
    start = np.ones(len(ends), bool)
    start[1:] = ends[1:, 0] != ends[:-1, 0]
    first = np.flatnonzero(start)
    best[ends[first, 0], 0], partner[ends[first, 0]] = ends[first, 2], ends[first, 1]
    second = first + 1
    second = second[(second < len(ends))]
    second = second[ends[second, 0] == ends[second - 1, 0]]
    second = second[start[second - 1]]  # the row right after each image's first row, when it is the same image
    best[ends[second, 0], 1] = ends[second, 2]
    a, b = cands[:, 0], cands[:, 1]
    other_a = np.where(partner[a] == b, best[a, 1], best[a, 0])
    other_b = np.where(partner[b] == a, best[b, 1], best[b, 0])
    return np.minimum(other_a, other_b)


def fine_distance(fine: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest fine-hash distance of any view of a to the whole b, or of any view of b to the whole a."""
    out = np.empty(len(a), dtype=np.int64)
    for s in range(0, len(a), 65536):  # bounded memory: 65,536 pairs x 28 views x 2 at a time
        x, y = a[s:s + 65536], b[s:s + 65536]
        ab = popcount(fine[x] ^ fine[y, 0][:, None, :]).sum(axis=-1).min(axis=1)
        ba = popcount(fine[y] ^ fine[x, 0][:, None, :]).sum(axis=-1).min(axis=1)
        out[s:s + 65536] = np.minimum(ab, ba)
    return out


def _unique_pairs(rows: np.ndarray) -> np.ndarray:
    if not len(rows):
        return rows.reshape(0, 3).astype(np.int64)
    rows = rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]
    first = np.ones(len(rows), bool)
    first[1:] = (rows[1:, 0] != rows[:-1, 0]) | (rows[1:, 1] != rows[:-1, 1])
    rows = rows[first]
    return rows[np.lexsort((rows[:, 1], rows[:, 0], rows[:, 2]))].astype(np.int64)


def exact_pairs(keys: Sequence[str]) -> np.ndarray:
    """Pairs of byte-identical files (equal `holdout.content_keys` / sha256 keys): each copy with the first of its
    group, distance 0."""
    first: dict[str, int] = {}
    rows = []
    for i, k in enumerate(keys):
        if not k.startswith("sha256:"):
            continue
        if k in first:
            rows.append((first[k], i, 0))
        else:
            first[k] = i
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def merge_pairs(*pair_sets: np.ndarray) -> np.ndarray:
    """Pairs of several sources (hashes, exact copies) as one set: each pair once, at its smallest distance."""
    rows = [p.reshape(-1, 3) for p in pair_sets if len(p)]
    return _unique_pairs(np.concatenate(rows)) if rows else np.zeros((0, 3), np.int64)


def similarity(distance: int | float) -> float:
    """A fine-hash distance as a score in [0, 1]: 1 for the same hashes, 0 at 128 bits (unrelated images)."""
    return round(max(0.0, 1.0 - float(distance) / (_FINE_WORDS * 32)), 6)


def pair_findings(pairs: np.ndarray, labels: Sequence[int], splits: Sequence[str]) -> list[Finding]:
    """One Finding per image and kind of pair, naming its closest partner of that kind."""
    best: dict[tuple[int, str], Finding] = {}
    for a, b, d in pairs.tolist():
        kind = pair_kind(splits[a], splits[b], labels[a], labels[b])
        for me, other in ((a, b), (b, a)):
            f = Finding(kind, me, similarity(d), float(d), other=other)
            if (me, kind) not in best or f.score > best[(me, kind)].score:
                best[(me, kind)] = f
    return sorted(best.values(), key=lambda f: (-f.score, f.index))
