"""What evaluate's calibration outputs cost (issue 21: at most 1.5x): `imgclass evaluate RUN DATA` with this
checkout (logits, ECE/NLL/Brier at two temperatures, risk-coverage, seen_by_run, reliability.png) against the same
command with the code of BASE (git archive of that commit: evaluate before these outputs), alternating, in one run,
in fresh processes (TensorFlow start-up included in both).

    .venv/bin/python bench/evaluate_overhead.py RUN DATA [--rounds 3] [--base COMMIT]

e.g. RUN a scratch run of Fashion-MNIST (bench/calibration_tta.py trains one) and DATA /work/fmnist/test.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PYTHON, ROOT, load_average  # noqa: E402

BASE = "6af193d"  # the last commit before the calibration outputs (branch insight)


def option(args: list[str], name: str, default: str) -> str:
    return args[args.index(name) + 1] if name in args else default


def checkout(commit: str, folder: str) -> str:
    """The package of `commit`, extracted with git archive (read-only for the repository)."""
    os.makedirs(folder)
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit, "imgclass_cli"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
    return folder


def evaluate(code: str, run: str, data: str, out: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process: steadier than wall time on a shared machine)."""
    t0, c0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([PYTHON, "-m", "imgclass_cli", "evaluate", run, data, "--out", out, "-q", "-f", "json"],
                       cwd=code, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": code})
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"evaluate failed with {code}:\n{p.stderr[-2000:]}")
    return time.time() - t0, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        raise SystemExit(__doc__)
    run, data = os.path.abspath(args[0]), os.path.abspath(args[1])
    rounds, base = int(option(args, "--rounds", "3")), option(args, "--base", BASE)
    tmp = tempfile.mkdtemp(prefix="bench-evaluate-overhead-")
    old = checkout(base, os.path.join(tmp, "base"))
    print(f"{time.strftime('%Y-%m-%d %H:%M')}: evaluate {run} on {data}; base {base} vs this checkout; load average "
          f"at start {load_average()} (2-core machine, shared)")
    times = {"base": [], "now": []}
    for i in range(rounds):
        for name, code in (("base", old), ("now", ROOT)):  # alternating: the same machine state for both
            times[name].append(evaluate(code, run, data, os.path.join(tmp, name, "metrics.json")))
        (bw, bc), (nw, nc) = times["base"][-1], times["now"][-1]
        print(f"  round {i + 1}: base {bw:.1f}s wall {bc:.1f}s CPU, now {nw:.1f}s wall {nc:.1f}s CPU; ratio wall "
              f"{nw / bw:.2f}, CPU {nc / bc:.2f} (load average {load_average()})")
    for k, what in ((0, "wall"), (1, "CPU")):
        base_s = statistics.median(t[k] for t in times["base"])
        now_s = statistics.median(t[k] for t in times["now"])
        print(f"median of {rounds}, {what}: base {base_s:.1f}s, now {now_s:.1f}s, ratio now/base {now_s / base_s:.2f}")


if __name__ == "__main__":
    main()
