"""Helpers for the benchmarks: run a command, time it, read the figures imgclass writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


def imgclass(*args: str, log: str | None = None) -> tuple[float, str]:
    """Run `python -m imgclass_cli ARGS`; (wall seconds, stderr). Raises on a non-zero exit."""
    return run([PYTHON, "-m", "imgclass_cli", *args], log=log)


def run(cmd: list[str], log: str | None = None) -> tuple[float, str]:
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    dt = time.time() - t0
    if log:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{p.stdout}\n{p.stderr}\n")
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return dt, p.stderr + p.stdout


def evaluate(run_dir: str, data: str) -> float:
    out = os.path.join(run_dir, "bench-metrics.json")
    subprocess.run([PYTHON, "-m", "imgclass_cli", "evaluate", run_dir, data, "--format", "json", "--out", out, "-q"],
                   cwd=ROOT, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": ROOT})
    return json.load(open(out))["accuracy"]


def load_average() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def timings(run_dir: str) -> dict:
    """The run's timings.json (seconds per stage) written by train/finetune."""
    return json.load(open(os.path.join(run_dir, "timings.json")))


def timings_text(t: dict) -> str:
    ep = t["epochs"]
    return (f"scan {t['scan']:.1f}s, model {t['model']:.1f}s, check {t['check']:.1f}s, feature cache "
            f"{t['feature_cache']:.1f}s, {len(ep)} epochs {sum(ep):.1f}s (first {ep[0] if ep else 0:.1f}s, mean "
            f"{sum(ep) / max(1, len(ep)):.1f}s), final validation {t['final_validation']:.1f}s, save {t['save']:.1f}s, "
            f"other {t['other']:.1f}s; total {t['total']:.1f}s")
