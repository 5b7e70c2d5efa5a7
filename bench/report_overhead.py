"""Benchmark: what report.html and mistakes.png add to `imgclass evaluate` on the 10,000 Fashion-MNIST test PNGs.

Trains a scratch `cnn` on a Fashion-MNIST subset (copied from /work/fmnist/train into a temporary folder; the
source is only read), then runs `evaluate RUN /work/fmnist/test` with the report and without it, alternating, in
fresh processes. "Without" is the same code with the report's one call (run/evalreport.write) made a no-op: the
evaluate of before the report. Prints each time, the medians and their ratio (the issue's bound: 1.5x).

    .venv/bin/python bench/report_overhead.py [--per-class 500] [--epochs 3] [--repeats 3] [--gallery 24]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PYTHON, ROOT, imgclass, load_average, run  # noqa: E402

FMNIST = "/work/fmnist"
MAIN = "from imgclass_cli.cli import main; sys.argv = ['imgclass', *sys.argv[1:]]; main()"
WITHOUT = "import sys; import imgclass_cli.run.evalreport as r; r.write = lambda *a, **k: []; " + MAIN
# The same evaluate, with the report's own time printed: a ratio less exposed to the noise of a shared machine.
WITH = ("import sys, time; import imgclass_cli.run.evalreport as r; w = r.write\n"
        "def timed(*a, **k):\n    t = time.perf_counter(); out = w(*a, **k)\n"
        "    print(f'REPORT {time.perf_counter() - t:.3f}', file=sys.stderr); return out\n"
        "r.write = timed; " + MAIN)


def subset(dest: str, per_class: int) -> str:
    """The first per_class training PNGs of each class, copied (never written into /work/fmnist)."""
    src = os.path.join(FMNIST, "train")
    for cls in sorted(os.listdir(src)):
        os.makedirs(os.path.join(dest, cls))
        for name in sorted(os.listdir(os.path.join(src, cls)))[:per_class]:
            shutil.copyfile(os.path.join(src, cls, name), os.path.join(dest, cls, name))
    return dest


def evaluate(run_dir: str, gallery: int, report: bool) -> tuple[float, float]:
    """(wall seconds of the whole command, seconds of the report inside it)."""
    args = ["evaluate", run_dir, os.path.join(FMNIST, "test"), "--gallery", str(gallery), "-q", "--format", "json"]
    t0 = time.perf_counter()
    _, out = run([PYTHON, "-c", WITH if report else WITHOUT, *args])
    inside = [float(line.split()[1]) for line in out.splitlines() if line.startswith("REPORT ")]
    return time.perf_counter() - t0, inside[0] if inside else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gallery", type=int, default=24)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-report-")
    try:
        data = subset(os.path.join(tmp, "train"), a.per_class)
        run_dir = os.path.join(tmp, "run")
        t, _ = imgclass("train", data, "--epochs", str(a.epochs), "--out", run_dir, "-q")
        print(f"trained the scratch cnn on {10 * a.per_class} images in {t:.0f}s; evaluate on the 10,000 test PNGs, "
              f"--gallery {a.gallery}, {a.repeats} times each, alternating; load average {load_average()}",
              flush=True)
        evaluate(run_dir, a.gallery, True)  # warm the file cache for both
        times, inside = {True: [], False: []}, []
        for i in range(a.repeats):
            for report in (False, True):
                total, part = evaluate(run_dir, a.gallery, report)
                times[report].append(total)
                inside += [part] if report else []
                print(f"  {'with   ' if report else 'without'} the report: {total:.1f}s"
                      + (f" (the report {part:.1f}s of it)" if report else "") + f"; load {load_average()}",
                      flush=True)
        with_, without = statistics.median(times[True]), statistics.median(times[False])
        share = statistics.median(t / (t - p) for t, p in zip(times[True], inside))
        print(f"median without {without:.1f}s, with {with_:.1f}s: ratio {with_ / without:.2f} (bound 1.5); the "
              f"report's own time {statistics.median(inside):.1f}s, with / (with - report) {share:.2f}; report.html "
              f"{os.path.getsize(os.path.join(run_dir, 'report.html')) / 1e6:.2f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
