"""Benchmark: near-duplicates and leakage found by `imgclass audit`, and how the search scales. Not run by CI.

    .venv/bin/python bench/audit_neardup.py [--copies 50] [--seed 0] [--scale 10000,100000]

1. Recall and false pairs: copies of `--copies` random hymenoptera photos (../shared/datasets/hymenoptera_data, 398
   photos in train/ and val/), each resized to 60-90%, JPEG-recompressed at quality 60-90 and cropped by up to
   10% (the crop split at random between the sides), put in the OTHER split of a new folder under /tmp (the
   originals are copied there too; the shared folder is only read). `imgclass audit` runs on it; a pair is found
   when audit.json lists (original, copy); a false pair is one between two originals.
2. Scaling (--scale-set photos, the default): the hashes of N photo-like images, synthesised as random square
   crops (35-60% of the shorter side, anywhere) of the 398 hymenoptera photos, hashed through the audit's own
   path (luma, 64x64 antialiased thumbnail, neardup.hashes), searched by the multi-index table
   (data/neardup.find_pairs) and by brute force (every pair compared; only up to --brute-limit), timed, with the
   peak memory of the search (tracemalloc; the hashes themselves excluded) and the number of candidates. Crops of
   one photo that overlap most of their area are near-duplicates, rightly. --scale-set fmnist: Fashion-MNIST's
   70,000 train+test PNGs, then synthesised near-copies (a random image resized to 22-27 px, cropped by up to 10%,
   brightened by 0-20%): the hard case for the table, look-alike garments on black crowd its buckets.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench._common import imgclass, load_average  # noqa: E402

HYM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "datasets", "hymenoptera_data")
HYM = HYM if os.path.isdir(HYM) else "/work/shared/datasets/hymenoptera_data"
FMNIST = "/work/fmnist"
WORK = "/tmp/imgclass-bench-audit-neardup"


def copy_of(path: str, rng: random.Random) -> bytes:
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w, h = im.size
    s = rng.uniform(0.6, 0.9)
    im = im.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.LANCZOS)
    w, h = im.size
    c = rng.uniform(0.0, 0.10)
    left, top = round(w * c * rng.random()), round(h * c * rng.random())
    im = im.crop((left, top, w - (round(w * c) - left), h - (round(h * c) - top)))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=rng.randint(60, 90))
    return buf.getvalue()


def recall(n_copies: int, seed: int) -> None:
    rng = random.Random(seed)
    folder = os.path.join(WORK, f"hymenoptera-copies-{seed}")
    shutil.rmtree(folder, ignore_errors=True)
    originals = sorted(os.path.relpath(os.path.join(d, f), HYM) for d, _, fs in os.walk(HYM) for f in fs)
    for rel in originals:
        os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
        shutil.copyfile(os.path.join(HYM, rel), os.path.join(folder, rel))
    truth = set()
    for rel in rng.sample(originals, n_copies):
        split, cls, name = rel.split(os.sep)
        other = "val" if split == "train" else "train"
        dst = os.path.join(other, cls, "copy-" + os.path.splitext(name)[0] + ".jpg")
        with open(os.path.join(folder, dst), "wb") as f:
            f.write(copy_of(os.path.join(HYM, rel), rng))
        truth.add(frozenset((os.path.join(folder, rel), os.path.join(folder, dst))))
    out = os.path.join(WORK, f"audit-{seed}")
    load = load_average()
    seconds, _ = imgclass("audit", folder, "--out", out, "--force", "-q", "--format", "json")
    report = json.load(open(os.path.join(out, "audit.json")))
    found = {frozenset((os.path.abspath(p["a"]), os.path.abspath(p["b"]))) for p in report["pairs"]}
    hits = found & truth
    false = [sorted(p) for p in found - truth if not any("copy-" in os.path.basename(x) for x in p)]
    kinds = {}
    for p in report["pairs"]:
        kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
    print(f"near-duplicates, seed {seed}: {len(hits)}/{len(truth)} copies found (recall {len(hits) / len(truth):.3f}); "
          f"{len(false)} false pair(s) among the {len(originals)} originals; pairs by kind {kinds}; "
          f"audit of {report['images']} images {seconds:.1f}s wall (load average {load} at start)")
    for p in false:
        print("   false pair:", *p)
    for p in sorted(truth - found, key=sorted):
        print("   missed:", *sorted(p))


def fmnist_images(limit: int) -> np.ndarray:
    from PIL import Image

    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(FMNIST) for f in fs if f.endswith(".png"))[:limit]
    return np.stack([np.array(Image.open(f).convert("RGB")) for f in files])


def synthesised(base: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n near-copies of random images of `base` (28x28): resized to 22-27 px, cropped by up to 10%, brightened by
    0-20%, then decoded back to 28x28 as the audit would (bilinear, antialiased)."""
    from PIL import Image

    rng = random.Random(seed)
    out = np.empty((n, 28, 28, 3), np.uint8)
    for k in range(n):
        im = Image.fromarray(base[rng.randrange(len(base))])
        s = rng.randint(22, 27)
        im = im.resize((s, s), Image.Resampling.BILINEAR)
        c = round(s * rng.uniform(0, 0.10))
        left, top = rng.randint(0, c), rng.randint(0, c)
        im = im.crop((left, top, s - (c - left), s - (c - top))).resize((28, 28), Image.Resampling.BILINEAR)
        out[k] = np.clip(np.asarray(im, np.float32) * rng.uniform(1.0, 1.2), 0, 255).astype(np.uint8)
    return out


def hashes(images: np.ndarray):
    """The audit's own path: luma, a 64x64 antialiased thumbnail (TensorFlow), neardup.hashes; flat images out."""
    from imgclass_cli._tf import tf
    from imgclass_cli.data import neardup, quality

    t = tf()
    coarse, fine, stats = [], [], []
    for i in range(0, len(images), 1024):
        x = images[i:i + 1024].astype(np.float32)
        thumbs = t.image.resize(quality.luma(x)[..., None], [neardup.THUMB] * 2, antialias=True).numpy()[..., 0]
        c, f = neardup.hashes(thumbs)
        coarse.append(c), fine.append(f), stats.append(quality.measure(x))
    stats = np.concatenate(stats)
    return np.concatenate(coarse), np.concatenate(fine), ~quality.flat(stats)


def brute_candidates(coarse, fine, searchable, coarse_bits: int, keep_bits: int) -> np.ndarray:
    """Every pair compared: the candidates find_pairs' table yields, without the table."""
    from imgclass_cli.data import neardup

    ids = np.flatnonzero(searchable)
    whole = coarse[ids, 0]
    rows = []
    for i in range(0, len(ids), 256):
        block = ids[i:i + 256]
        d = neardup.popcount(coarse[block][:, :, None] ^ whole[None, None, :]).min(axis=1)  # (block, n)
        a, t = np.nonzero(d <= coarse_bits)
        a, b = block[a], ids[t]
        keep = a != b
        pairs = np.unique(np.stack([np.minimum(a, b)[keep], np.maximum(a, b)[keep]], axis=1), axis=0)
        dist = neardup.fine_distance(fine, pairs[:, 0], pairs[:, 1])
        rows.append(np.concatenate([pairs, dist[:, None]], axis=1)[dist <= keep_bits])
    return np.unique(np.concatenate(rows), axis=0)


def photo_thumbs(n: int, seed: int) -> np.ndarray:
    """n 64x64 luma thumbnails of random square crops (35-60% of the shorter side) of the hymenoptera photos."""
    from PIL import Image, ImageOps

    from imgclass_cli.data import neardup

    rng = random.Random(seed)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(HYM) for f in fs)
    photos = []
    for f in files:
        im = ImageOps.exif_transpose(Image.open(f)).convert("L")
        im.thumbnail((512, 512))
        photos.append(im)
    out = np.empty((n, neardup.THUMB, neardup.THUMB), np.float32)
    for k in range(n):
        im = photos[rng.randrange(len(photos))]
        side = round(min(im.size) * rng.uniform(0.35, 0.6))
        x, y = rng.randint(0, im.width - side), rng.randint(0, im.height - side)
        crop = im.crop((x, y, x + side, y + side)).resize((neardup.THUMB, neardup.THUMB), Image.Resampling.BILINEAR,
                                                          reducing_gap=None)
        out[k] = np.asarray(crop, np.float32)
    return out


def thumb_hashes(thumbs: np.ndarray):
    from imgclass_cli.data import neardup

    parts = [neardup.hashes(thumbs[i:i + 1024]) for i in range(0, len(thumbs), 1024)]
    return np.concatenate([c for c, _ in parts]), np.concatenate([f for _, f in parts]), thumbs.std(axis=(1, 2)) > 8


def scaling(sizes: list[int], brute_limit: int, seed: int, which: str) -> None:
    from imgclass_cli import config
    from imgclass_cli.data import neardup

    top = max(sizes)
    t0 = time.perf_counter()
    if which == "photos":
        thumbs = photo_thumbs(top, seed)
        print(f"{top} photo crops made in {time.perf_counter() - t0:.1f}s", flush=True)
        t0 = time.perf_counter()
        coarse, fine, searchable = thumb_hashes(thumbs)
    else:
        base = fmnist_images(70_000)
        images = np.concatenate([base, synthesised(base, max(0, top - len(base)), seed)])[:top] \
            if top > len(base) else base[:top]
        t0 = time.perf_counter()
        coarse, fine, searchable = hashes(images)
    print(f"{which}: hashing {top} images (28 views, DCT): {time.perf_counter() - t0:.1f}s "
          f"({(time.perf_counter() - t0) / top * 1e4:.1f}s per 10,000); load average {load_average()}")
    kw = dict(coarse_bits=config.DUP_COARSE_BITS, sure_bits=config.DUP_SURE_BITS, fine_bits=config.DUP_FINE_BITS,
              ratio=config.DUP_RATIO)
    for n in sizes:
        c, f, s = coarse[:n], fine[:n], searchable[:n]
        tracemalloc.start()
        t0 = time.perf_counter()
        pairs = neardup.find_pairs(c, f, searchable=s, **kw)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        cands = len(neardup.find_pairs(c, f, searchable=s, coarse_bits=kw["coarse_bits"], sure_bits=256,
                                       fine_bits=256, ratio=0))
        line = (f"n={n}: index {seconds:.2f}s, peak {peak / 1e6:.0f} MB, {cands} candidates, {len(pairs)} pairs "
                f"(load average {load_average()})")
        if n <= brute_limit:
            t0 = time.perf_counter()
            cands = brute_candidates(c, f, s, kw["coarse_bits"], neardup.candidate_bits(kw["fine_bits"], kw["ratio"]))
            same = neardup.accept(cands, n, sure_bits=kw["sure_bits"], fine_bits=kw["fine_bits"], ratio=kw["ratio"])
            brute = time.perf_counter() - t0
            line += (f"; brute force {brute:.2f}s ({brute / seconds:.1f}x the index), same pairs: "
                     f"{np.array_equal(same, pairs)}")
        print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", default="10000,100000", help="image counts for the scaling part ('' to skip)")
    ap.add_argument("--brute-limit", type=int, default=20_000, help="largest count brute force runs on")
    ap.add_argument("--scale-set", choices=("photos", "fmnist"), default="photos")
    ap.add_argument("--skip-recall", action="store_true")
    args = ap.parse_args()
    if not args.skip_recall:
        recall(args.copies, args.seed)
    if args.scale:
        scaling([int(x) for x in args.scale.split(",")], args.brute_limit, args.seed, args.scale_set)


if __name__ == "__main__":
    main()
