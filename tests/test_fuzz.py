"""Every file imgclass reads, made hostile: truncated at many offsets, random bytes, flipped bytes, JSON nested
100,000 deep, huge and negative numbers, wrong types. Each case is either accepted (the damage left a valid file)
or refused with one ImgclassError (exit 2) naming the file, in bounded memory; never another exception, a
traceback, a native crash or a number from the file sizing an allocation.

The cheap parsers (JSON, CSV, the marker, the flatbuffer check) run in this process, many cases each; the
native parsers (TFLite's interpreter, protobuf, TensorFlow's SavedModel and TFRecord readers) run in one child
process, whose crash would fail the test naming the case. `test_fuzz_summary` prints the table of the report.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

from imgclass_cli import files, fs
from imgclass_cli.cli import app
from imgclass_cli.errors import EXIT_USAGE, ImgclassError
from tests.conftest import make_class_folders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRUNCATIONS = 24  # offsets per file, spread from 0 to its length
RANDOM = 4  # files of random bytes per kind
FLIPS = 8  # copies with a few bytes changed
MEMORY_LIMIT = 64 * 2**20  # peak Python allocation of one case: a size read from the file must not size memory
DEEP = 100_000
MAX_CASES = 30  # per kind: the named structural cases and a seeded sample of the rest (the suite's time budget)
WRONG = [None, True, -1, 0, 2**64, -(2**63), 1e308, -1e308, "", "x" * 300, "\x00", [], {}, [[[]]], {"a": {}}]


def mutations(data: bytes, seed: int) -> list[tuple[str, bytes]]:
    """(what, bytes): truncations, random bytes, flipped bytes of a valid file."""
    rng = random.Random(seed)
    cases = [(f"truncated at {n}", data[:n]) for n in sorted({len(data) * k // TRUNCATIONS for k in range(TRUNCATIONS)})]
    cases += [(f"random {n} bytes", rng.randbytes(n)) for n in (1, 17, 300, len(data))[:RANDOM]]
    for k in range(FLIPS):
        b = bytearray(data)
        for _ in range(1 + k % 3):
            b[rng.randrange(len(b))] = rng.randrange(256)
        cases.append((f"flipped bytes #{k}", bytes(b)))
    return cases


def json_cases(obj, seed: int) -> list[tuple[str, bytes]]:
    """Byte mutations of obj's JSON, deep nesting, huge numbers, and every field (to depth 2) set to a wrong value."""
    data = json.dumps(obj, indent=2).encode()
    cases = mutations(data, seed)
    cases += [("nested 100k deep (arrays)", b"[" * DEEP + b"]" * DEEP), ("nested 100k deep (objects)",
              b'{"a":' * DEEP + b"1" + b"}" * DEEP), ("unclosed nesting", b"[" * DEEP), ("1e999", b"1e999"),
              ("-Infinity", b"-Infinity"), ("NaN", b"NaN"), ("a 5000-digit number", b"9" * 5000), ("null", b"null"),
              ("empty", b""), ("lone surrogate", b'"\\ud800"'), ("BOM", b"\xef\xbb\xbf" + data)]
    for path, _ in _leaves(obj):
        for w in WRONG:
            cases.append((f"{'.'.join(map(str, path)) or '(top)'} = {w!r:.20}", json.dumps(_set(obj, path, w)).encode()))
        cases.append((f"{'.'.join(map(str, path))} nested 100k deep",
                      json.dumps(_set(obj, path, "@@")).encode().replace(b'"@@"', b"[" * DEEP + b"]" * DEEP)))
    return cases


def _leaves(obj, path=(), depth=0):
    yield path, obj
    if depth < 2 and isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, path + (k,), depth + 1)
    elif depth < 2 and isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            yield from _leaves(v, path + (i,), depth + 1)


def _set(obj, path, value):
    if not path:
        return value
    copy = json.loads(json.dumps(obj))
    at = copy
    for p in path[:-1]:
        at = at[p]
    at[path[-1]] = value
    return copy


def csv_cases(text: str, seed: int) -> list[tuple[str, bytes]]:
    """Byte mutations, rows cut short or made long, every cell of the first data row set to a hostile value."""
    data = text.encode()
    cases = mutations(data, seed)
    lines = text.splitlines()
    header, row = lines[0], lines[1].split(",")
    cases += [("header only", (header + "\n").encode()), ("no header", "\n".join(lines[1:]).encode()),
              ("a short row", (header + "\n" + ",".join(row[:2]) + "\n").encode()),
              ("a long row", (header + "\n" + ",".join(row + ["x"] * 5) + "\n").encode()),
              ("a 1 MB cell", (header + "\n" + ",".join(["y" * 2**20] + row[1:]) + "\n").encode()),
              ("an open quote", (header + '\n"' + lines[1] + "\n").encode()), ("NUL bytes", data.replace(b",", b"\0", 3)),
              ("not UTF-8", data + b"\xff\xfe")]
    for i, name in enumerate(header.split(",")):
        for bad in ("", "-1", "99999999999999999999", "1e999", "nan", "../../etc/passwd", "/etc/passwd", "\x1b[2J",
                    "x" * 500):
            cells = list(row)
            cells[i] = f'"{bad}"' if "," in bad else bad
            cases.append((f"{name} = {bad!r:.20}", "\n".join([header, ",".join(cells), *lines[2:]]).encode()))
    return cases


# ---------------------------------------------------------------- the inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, trained_run, data_dir, runner):
    """One of every file kind imgclass reads, valid, in a folder of its own (copied into tmp per case)."""
    from imgclass_cli.run import checkpoints as ckpt

    base = tmp_path_factory.mktemp("fuzz")
    run = str(base / "run")
    shutil.copytree(trained_run, run)
    small = make_class_folders(base / "images", per_class=6)  # a manifest of 18 rows: cheap to scan hundreds of times
    for args, out in ((["prepare", small], "prepared"), (["prepare", small, "--tfrecord"], "tfrecord")):
        r = runner.invoke(app, [*args, str(base / out), "-q"])
        assert r.exit_code == 0, r.output
    export = str(base / "export")
    os.makedirs(export)
    json.dump({"format": "tflite", "model": "model.tflite", "image_size": 32}, open(f"{export}/export.json", "w"))
    open(f"{export}/labels.txt", "w").write("blue\ngreen\nred\n")
    shutil.copy(f"{run}/labels.json", f"{export}/labels.json")
    folder = ckpt.checkpoint_dir(str(base / "interrupted"))
    fs.make_owned_dir(folder, fs.CHECKPOINT)
    from imgclass_cli.config import TrainConfig

    config = TrainConfig.defaults("train", data=data_dir, arch="simple-cnn", image_size=32, epochs=3, batch_size=16)
    state = {"config": config.to_dict(), "out": str(base / "interrupted"), "phase": 1, "epoch": 1,
             "history": [{"epoch": 1, "phase": 1, "loss": 1.0, "accuracy": 0.5}]}
    open(os.path.join(folder, files.STATE), "w").write(json.dumps(state))
    return {"base": str(base), "run": run, "prepared": str(base / "prepared"), "tfrecord": str(base / "tfrecord"),
            "export": export, "checkpoint": folder}


def _readers(inp: dict) -> dict:
    """kind -> (file to mutate, the folder holding it, reader(folder copy), what the message must name)."""
    from imgclass_cli.data import dataset, manifest
    from imgclass_cli.run import checkpoints as ckpt
    from imgclass_cli.run import export, predictors, rundir

    def recorded(run):
        return export.recorded_images(rundir.read_info(run), ("val", "train"))

    def scan(folder):
        dataset.scan(folder, val_split=0.2, seed=0)
        dataset.scan_for_eval(folder)
        if manifest.is_tfrecord(manifest.read(folder)[0]):
            dataset.records(folder)

    def labels_txt(folder):  # read when an export has no labels.json
        fs.remove_file(os.path.join(folder, files.LABELS))
        predictors.resolve(folder)

    def marker(folder):
        fs.check_out(folder, True, fs.RUN)  # --force on a folder: only a run directory's marker lets it through

    return {
        "labels.json": (files.LABELS, inp["run"], rundir.read_info),
        "config.json": (files.CONFIG, inp["run"], rundir.read_info),
        "model.keras (zip check)": (files.MODEL, inp["run"], rundir.read_info),
        "split.csv": (files.SPLIT, inp["run"], recorded),
        "state.json": (files.STATE, inp["checkpoint"], ckpt.read_state),
        "manifest.csv (folder)": (files.MANIFEST, inp["prepared"], scan),
        "manifest.csv (TFRecord)": (files.MANIFEST, inp["tfrecord"], scan),
        "prepare.json": (files.PREPARE_INFO, inp["prepared"], scan),
        ".imgclass marker": (fs.MARKER, inp["run"], marker),
        "export.json": (files.EXPORT_INFO, inp["export"], predictors.resolve),
        "labels.txt": (files.LABELS_TXT, inp["export"], labels_txt),
    }


def _cases(kind: str, data: bytes, seed: int) -> list[tuple[str, bytes]]:
    if kind.endswith(".json") or kind in (".imgclass marker",):
        cases = json_cases(json.loads(data), seed)
    elif ".csv" in kind:
        cases = csv_cases(data.decode(), seed)
    else:
        cases = mutations(data, seed)
    fixed = [c for c in cases if not c[0].startswith(("truncated", "random", "flipped")) and "=" not in c[0]
             and " nested 100k deep" not in c[0]]
    rest = [c for c in cases if c not in fixed]
    return fixed + random.Random(seed).sample(rest, max(0, min(len(rest), MAX_CASES - len(fixed))))


def _answer(reader, folder: str, name: str) -> str:
    """'accepted', or 'refused' when the reader raised one ImgclassError naming the file (else the test fails)."""
    tracemalloc.reset_peak()
    try:
        reader(folder)
        answer = "accepted"
    except ImgclassError as e:
        assert e.exit_code == EXIT_USAGE, e.message
        assert "\n" not in e.message and len(e.message) < 1000, e.message
        # A prepared folder's manifest describes the folder: "only one class has images" names the folder.
        mentions = (os.path.join(folder, name), folder) if name in (fs.MARKER, files.MODEL, files.MANIFEST,
                                                                   files.PREPARE_INFO) else (os.path.join(folder, name),)
        assert any(m in e.message for m in mentions), e.message
        answer = "refused"
    assert tracemalloc.get_traced_memory()[1] < MEMORY_LIMIT, f"peak {tracemalloc.get_traced_memory()[1] // 2**20} MB"
    return answer


SUMMARY: dict = {}


@pytest.mark.slow  # a few seconds on an idle machine (the JSON and CSV cases of eleven kinds)
def test_fuzz_every_file_read_without_native_code(inputs, tmp_path):
    readers = _readers(inputs)
    failures = []
    tracemalloc.start()
    try:
        for n, (kind, (name, folder, reader)) in enumerate(readers.items()):
            good = open(os.path.join(folder, name), "rb").read()
            copy = str(tmp_path / f"k{n}")
            shutil.copytree(folder, copy, symlinks=True)
            assert _answer(reader, copy, name) == "accepted", kind  # the valid file is read
            counts = {"accepted": 0, "refused": 0}
            for what, data in _cases(kind, good, seed=n):
                with open(os.path.join(copy, name), "wb") as f:
                    f.write(data)
                try:
                    counts[_answer(reader, copy, name)] += 1
                except (AssertionError, Exception) as e:  # noqa: BLE001 -- the point: name the case, go on
                    failures.append(f"{kind}, {what}: {type(e).__name__}: {str(e)[:200]}")
            SUMMARY[kind] = counts
    finally:
        tracemalloc.stop()
    assert not failures, f"{len(failures)} case(s):\n" + "\n".join(failures[:40])


def test_fuzz_checkpoint_arrays(tmp_path):
    """weights.npz / optimizer.npz: the shapes come from each member's header, checked before its data is read."""
    from imgclass_cli.run import checkpoints as ckpt

    expected = [((3, 4), np.float32), ((4,), np.float32)]
    path = str(tmp_path / files.WEIGHTS)
    np.savez(path, np.ones((3, 4), np.float32), np.zeros(4, np.float32))
    good = open(path, "rb").read()
    assert [a.shape for a in ckpt.read_arrays(path, expected)] == [(3, 4), (4,)]
    crafted = {"wrong shape": [np.ones((4, 3), np.float32), np.zeros(4, np.float32)],
               "huge shape in the header": None, "wrong dtype": [np.ones((3, 4)), np.zeros(4)],
               "one array": [np.ones((3, 4), np.float32)], "pickled object": [np.array([{}], dtype=object)] * 2}
    counts = {"accepted": 0, "refused": 0}
    tracemalloc.start()
    try:
        for what, data in mutations(good, seed=3) + [(k, None) for k in crafted]:
            if data is None and crafted[what] is not None:
                np.savez(path, *crafted[what])
            elif data is None:  # a header claiming 2**40 floats over a few bytes of data
                np.savez(path, np.ones((3, 4), np.float32), np.zeros(4, np.float32))
                blob = open(path, "rb").read().replace(b"(4,)", b"(1099511627776,)".ljust(4))
                open(path, "wb").write(blob)
            else:
                open(path, "wb").write(data)
            counts[_answer(lambda p: ckpt.read_arrays(path, expected), str(tmp_path), files.WEIGHTS)] += 1
    finally:
        tracemalloc.stop()
    SUMMARY["weights.npz / optimizer.npz"] = counts


CHILD = textwrap.dedent('''
    """The native parsers, fuzzed in a child process: TFLite's interpreter, protobuf (saved_model.pb), TensorFlow's
    SavedModel loader and TFRecord reader, Keras' .keras loader. Prints CASE lines to stderr before each case (the
    last one names a crash) and one JSON summary on stdout."""
    import json, os, random, shutil, sys
    from tests.test_fuzz import mutations
    from imgclass_cli.errors import ImgclassError
    from imgclass_cli._tf import tf
    from imgclass_cli.run import predictors, rundir
    from imgclass_cli.data import dataset, tfrecord
    import numpy as np

    run, tfr, work = sys.argv[1:4]
    t = tf()
    names = ["blue", "green", "red"]
    summary, bad = {}, []

    class Tiny(t.Module):
        def __init__(self):
            self.w = t.Variable(t.random.stateless_uniform([3, 3], seed=[1, 2]))

        @t.function(input_signature=[t.TensorSpec([None, 32, 32, 3], t.float32, name="image")])
        def serve(self, image):
            return {"probabilities": t.nn.softmax(t.matmul(t.reduce_mean(image, axis=[1, 2]), self.w))}

    tiny = Tiny()
    conv = t.lite.TFLiteConverter.from_concrete_functions([tiny.serve.get_concrete_function()], tiny)
    tflite = conv.convert()
    sm = os.path.join(work, "sm")
    t.saved_model.save(tiny, sm, signatures={"serving_default": tiny.serve})
    x = np.zeros((2, 32, 32, 3), np.float32)

    def case(kind, what, fn, names_file):
        print("CASE", kind, what, file=sys.stderr, flush=True)
        counts = summary.setdefault(kind, {"accepted": 0, "refused": 0})
        try:
            fn()
            counts["accepted"] += 1
        except ImgclassError as e:
            if e.exit_code != 2 or "\\n" in e.message or names_file not in e.message:
                bad.append(f"{kind}, {what}: {e.message[:200]}")
            counts["refused"] += 1
        except Exception as e:  # noqa: BLE001
            bad.append(f"{kind}, {what}: {type(e).__name__}: {str(e)[:200]}")

    path = os.path.join(work, "model.tflite")
    for what, data in mutations(tflite, seed=11) + mutations(tflite, seed=12)[-8:]:
        open(path, "wb").write(data)
        case(".tflite", what, lambda: predictors.TFLitePredictor(path, names).predict(x), path)

    def fuzz_file(kind, path, seed, step, fn, names_file):
        """Each `step`-th mutation of the file at `path` written in its place and probed with fn; then the file
        restored."""
        good = open(path, "rb").read()
        for what, data in mutations(good, seed=seed)[::step]:
            open(path, "wb").write(data)
            case(kind, what, fn, names_file)
        open(path, "wb").write(good)

    load_sm = lambda: predictors.SavedModelPredictor(sm, names, 32).predict(x)  # noqa: E731
    fuzz_file("SavedModel (saved_model.pb)", os.path.join(sm, "saved_model.pb"), 13, 3, load_sm, sm)
    fuzz_file("SavedModel (variables)", os.path.join(sm, "variables", "variables.data-00000-of-00001"), 14, 12,
              load_sm, sm)

    folder = os.path.join(work, "tfrecord")
    shutil.copytree(tfr, folder)
    fuzz_file("TFRecord shard", os.path.join(folder, "train-00000-of-00001.tfrecord"), 15, 4,
              lambda: list(tfrecord.iter_contents(dataset.records(folder))), folder)

    copy = os.path.join(work, "run")
    shutil.copytree(run, copy)
    model = os.path.join(copy, "model.keras")
    fuzz_file("model.keras (load)", model, 16, 12, lambda: rundir.load(copy), model)
    print(json.dumps({"summary": summary, "bad": bad}))
''')


@pytest.mark.slow
def test_fuzz_native_parsers_in_a_child_process(inputs, tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", CHILD, inputs["run"], inputs["tfrecord"], str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    cases = [line for line in proc.stderr.splitlines() if line.startswith("CASE")]
    assert proc.returncode == 0, f"exit {proc.returncode} at {cases[-1] if cases else 'start'}: {proc.stderr[-2000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["bad"], "\n".join(result["bad"][:40])
    SUMMARY.update(result["summary"])


def test_fuzzed_files_through_the_cli_are_one_error_line_and_nothing_on_stdout(inputs, runner, tmp_path, test_dir):
    """The whole command on a few of the cases: exit 2, one `Error:` line naming the file, stdout untouched (the
    model loads before predict's CSV header)."""
    from imgclass_cli.run import checkpoints as ckpt

    red = os.path.join(test_dir, "red")
    run = str(tmp_path / "run")
    shutil.copytree(inputs["run"], run)
    export = str(tmp_path / "export")
    shutil.copytree(inputs["export"], export)
    open(os.path.join(export, "model.tflite"), "wb").write(b"\x1c\0\0\0TFL3" + bytes(1990))  # `head -c 2000`
    deep = str(tmp_path / "deep")
    shutil.copytree(inputs["run"], deep)
    open(os.path.join(deep, files.LABELS), "w").write("[" * DEEP + "]" * DEEP)
    resume = str(tmp_path / ".interrupted.checkpoint")
    shutil.copytree(inputs["checkpoint"], resume)
    open(os.path.join(resume, files.STATE), "w").write('{"config": {"epochs": 1e999}}')
    cases = [
        (["predict", export, red, "-f", "csv"], os.path.join(export, "model.tflite")),
        (["predict", deep, red, "-f", "csv"], os.path.join(deep, files.LABELS)),
        (["evaluate", deep, red], os.path.join(deep, files.LABELS)),
        (["train", test_dir, "--resume", resume], os.path.join(resume, files.STATE)),
    ]
    for args, named in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and r.stdout == "", (args, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:") and named in lines[0], (args, r.stderr)
    assert ckpt.read_state(inputs["checkpoint"])  # the fixture's own copy is untouched


@pytest.fixture(scope="module", autouse=True)
def fuzz_summary():
    """After this module's tests, the report's table: how many cases each kind got and what they answered (shown
    with `pytest -s tests/test_fuzz.py`)."""
    yield
    if SUMMARY:
        print("\n| input | cases | accepted (still valid) | refused (exit 2, one line naming it) |")
        for kind, c in SUMMARY.items():
            print(f"| {kind} | {c['accepted'] + c['refused']} | {c['accepted']} | {c['refused']} |")
