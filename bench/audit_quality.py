"""Benchmark: the image-quality check of `imgclass audit` on the 398 real hymenoptera photos plus injected bad
images. Not run by CI.

    .venv/bin/python bench/audit_quality.py [--per-kind 10] [--seed 0]

The photos (../shared/datasets/hymenoptera_data, only read) are copied into a new folder under /tmp, and
--per-kind of them (random, seeded) are added again, each spoilt one way: dark (every pixel x 0.08), blown out
(brightness x 4, clipped: PIL's ImageEnhance.Brightness), blurred (Gaussian blur of radius 1% of the longer side, at least 3 px) and tiny (downscaled to
8x8). `imgclass audit` runs on the folder (no embeddings: the quality check needs none; it decodes at 224 px).
Prints how many of each injected kind were flagged as that kind, and every flag on the real photos.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench._common import imgclass, load_average  # noqa: E402
from bench.audit_neardup import HYM  # noqa: E402

WORK = "/tmp/imgclass-bench-audit-quality"
SPOILT = {"dark": "dark", "blown": "bright", "blurred": "blurry", "tiny": "tiny"}


def spoil(path: str, how: str):
    from PIL import Image, ImageEnhance, ImageFilter, ImageOps

    im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    if how == "dark":
        return Image.fromarray((np.asarray(im, np.float32) * 0.08).astype(np.uint8))
    if how == "blown":
        return ImageEnhance.Brightness(im).enhance(4.0)
    if how == "blurred":
        return im.filter(ImageFilter.GaussianBlur(max(3, max(im.size) // 100)))
    return im.resize((8, 8), Image.Resampling.LANCZOS)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-kind", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    folder = os.path.join(WORK, "data")
    shutil.rmtree(folder, ignore_errors=True)
    originals = sorted(os.path.relpath(os.path.join(d, f), HYM) for d, _, fs in os.walk(HYM) for f in fs)
    for rel in originals:
        os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
        shutil.copyfile(os.path.join(HYM, rel), os.path.join(folder, rel))
    injected = {}
    for how in SPOILT:
        for rel in rng.sample(originals, args.per_kind):
            split, cls, name = rel.split(os.sep)
            dst = os.path.join(folder, split, cls, f"{how}-{os.path.splitext(name)[0]}.png")
            spoil(os.path.join(HYM, rel), how).save(dst)
            injected[os.path.abspath(dst)] = how
    out = os.path.join(WORK, "audit")
    load = load_average()
    seconds, _ = imgclass("audit", folder, "--out", out, "--force", "-q")
    report = json.load(open(os.path.join(out, "audit.json")))
    quality = [i for i in report["issues"] if i["issue"] in SPOILT.values() or i["issue"] in
               ("low_contrast", "aspect_ratio", "grayscale")]
    for how, kind in SPOILT.items():
        mine = [p for p, h in injected.items() if h == how]
        hit = {os.path.abspath(i["path"]) for i in quality if i["issue"] == kind} & set(mine)
        other = sorted({i["issue"] for i in quality if os.path.abspath(i["path"]) in mine})
        print(f"injected {how}: {len(hit)}/{len(mine)} flagged {kind} (kinds flagged on them: {', '.join(other)})")
    real = [i for i in quality if os.path.abspath(i["path"]) not in injected]
    print(f"real photos: {len(real)} quality flag(s) on {len({i['path'] for i in real})} of {len(originals)} "
          f"(audit {seconds:.1f}s wall, load average {load} at start); thresholds "
          f"{json.dumps(report['checks']['quality']['thresholds'])}")
    for i in real:
        print(f"   {i['issue']:<12} score {i['score']:.3f} value {i['value']}  {os.path.relpath(i['path'], folder)}")


if __name__ == "__main__":
    main()
