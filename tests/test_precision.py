"""--precision: the policy chosen for described machines (GPUs faked, CPUs with and without bfloat16), the refusal of
a precision the machine lacks, and a bfloat16 run against a float32 run of the same seed on real digits, with its
exports."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pytest

from imgclass_cli import precision
from imgclass_cli.cli import app
from imgclass_cli.config import Precision
from imgclass_cli.errors import ImgclassError
from imgclass_cli.precision import Gpu, Machine

AMX_CPU = Machine(frozenset({"avx512f", "amx_bf16", "amx_tile", "avx512_bf16"}))
AVX512_BF16_CPU = Machine(frozenset({"avx512f", "avx512_bf16"}))
PLAIN_CPU = Machine(frozenset({"avx2", "fma"}))
AMPERE = Machine(PLAIN_CPU.cpu_flags, (Gpu("NVIDIA A100", (8, 0)),))
TURING = Machine(AMX_CPU.cpu_flags, (Gpu("Tesla T4", (7, 5)),))
PASCAL = Machine(AMX_CPU.cpu_flags, (Gpu("Tesla P100", (6, 0)),))


@pytest.mark.parametrize("machine, policy, why", [
    (AMPERE, "mixed_bfloat16", "NVIDIA A100 (compute capability 8.0) has bfloat16 tensor cores"),
    (TURING, "mixed_float16", "Tesla T4 (compute capability 7.5) has float16 tensor cores; Keras' loss scaling on"),
    (PASCAL, "float32", "Tesla P100 (compute capability 6.0) has no tensor cores"),  # the GPU runs it, not the CPU
    (AMX_CPU, "mixed_bfloat16", "this CPU has amx_bf16 and avx512_bf16"),
    (AVX512_BF16_CPU, "mixed_bfloat16", "this CPU has avx512_bf16"),
    (PLAIN_CPU, "float32", "this CPU has neither amx_bf16 nor avx512_bf16"),
])
def test_auto_picks_the_policy_the_hardware_runs_natively(machine, policy, why):
    choice = precision.choose(Precision.auto, machine)
    assert choice.policy == policy and why in choice.why
    assert choice.line() == f"precision {policy} ({choice.why}; --precision sets it)"
    assert choice.loss_scaling == (policy == "mixed_float16")


def test_mixed_gpus_are_held_to_the_weakest():
    both = Machine(frozenset(), (Gpu("NVIDIA A100", (8, 0)), Gpu("Tesla T4", (7, 5))))
    assert precision.choose("auto", both).policy == "mixed_float16"


@pytest.mark.parametrize("requested, machine, policy", [
    ("float32", AMPERE, "float32"), ("bfloat16", AMPERE, "mixed_bfloat16"), ("float16", AMPERE, "mixed_float16"),
    ("float16", TURING, "mixed_float16"), ("bfloat16", AMX_CPU, "mixed_bfloat16"), ("float32", PLAIN_CPU, "float32"),
])
def test_an_explicit_precision_the_hardware_has_is_used(requested, machine, policy):
    assert precision.choose(requested, machine).policy == policy


@pytest.mark.parametrize("requested, machine, message", [
    ("float16", AMX_CPU, "--precision float16 needs a GPU of compute capability 7.0 or higher (CPUs emulate it); "
     "this machine supports float32, bfloat16 (CPU: amx_bf16, avx512_bf16)"),
    ("bfloat16", PLAIN_CPU, "--precision bfloat16 needs a GPU of compute capability 8.0 or higher, or a CPU with "
     "amx_bf16 or avx512_bf16; this machine supports float32 "),
    ("bfloat16", TURING, "this machine supports float32, float16 (GPU Tesla T4 (compute capability 7.5))"),
    ("float16", PASCAL, "this machine supports float32 "),
])
def test_a_precision_the_machine_would_emulate_is_refused_naming_what_it_supports(requested, machine, message):
    with pytest.raises(ImgclassError) as e:
        precision.choose(requested, machine)
    assert message in e.value.message and e.value.exit_code == 2


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16\nbugs\t\t: none\n")
    assert precision.cpu_flags(str(info)) == {"fpu", "avx512f", "amx_bf16"}
    assert precision.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_float16_on_this_cpu_fails_at_once_with_one_line(runner, data_dir, tmp_path):
    if precision.describe_machine().gpus:
        pytest.skip("this machine has a GPU")
    r = runner.invoke(app, ["train", data_dir, "--precision", "float16", "--epochs", "1", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2
    assert r.stderr.startswith("Error: --precision float16 needs a GPU") and r.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- a bfloat16 run on real digits

HAS_BF16 = precision.choose("auto", Machine(precision.cpu_flags())).policy == "mixed_bfloat16"
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bfloat16 instructions")
# Same seed, same data: float32 and bfloat16 runs differ only in rounding, which training amplifies. Measured on
# the 360 digit test images: 0.5-1.4 points apart; one standard error of either accuracy is 1.5 points.
ACCURACY_TOLERANCE = 0.04


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    from imgclass_cli.config import ExampleConfig
    from imgclass_cli.data import examples

    root = str(tmp_path_factory.mktemp("digits") / "digits")
    examples.write_digits(root, ExampleConfig())
    return root


@pytest.fixture(scope="session")
def digit_runs(runner, digits, tmp_path_factory):
    """The same seed and options in bfloat16 and in float32: 3 epochs of the default cnn at the digits' 8 px."""
    root = tmp_path_factory.mktemp("precision")
    runs = {}
    for p in ("bfloat16", "float32"):
        out = str(root / p)
        r = runner.invoke(app, ["train", os.path.join(digits, "train"), "--epochs", "3", "--precision", p,
                                "--out", out])
        assert r.exit_code == 0, r.output
        runs[p] = (out, r)
    return runs


def _accuracy(runner, run, data, *extra) -> float:
    r = runner.invoke(app, ["evaluate", run, data, "--format", "json", "--out", os.path.join(run, "test.json"),
                            *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["accuracy"]


@needs_bf16
@pytest.mark.slow
def test_a_bfloat16_run_matches_a_float32_run_of_the_same_seed(runner, digits, digit_runs):
    (bf16, r), (fp32, _) = digit_runs["bfloat16"], digit_runs["float32"]
    assert "precision mixed_bfloat16 (this CPU has" in r.stderr
    recorded = json.load(open(os.path.join(bf16, "config.json")))
    assert recorded["options"]["precision"] == "bfloat16" and recorded["precision"]["policy"] == "mixed_bfloat16"
    test = os.path.join(digits, "test")
    a_bf16, a_fp32 = _accuracy(runner, bf16, test), _accuracy(runner, fp32, test)
    assert a_fp32 > 0.8 and abs(a_bf16 - a_fp32) <= ACCURACY_TOLERANCE, (a_bf16, a_fp32)
    # The saved model is float32 throughout: it predicts on a machine without bfloat16.
    assert _accuracy(runner, bf16, test, "--precision", "float32") == pytest.approx(a_bf16, abs=0.02)


def _labels(runner, target, files, *extra):
    r = runner.invoke(app, ["predict", target, *files, "-f", "csv", *extra])
    assert r.exit_code == 0, r.output
    return [row["label"] for row in csv.DictReader(io.StringIO(r.stdout))]


@needs_bf16
@pytest.mark.slow
def test_a_bfloat16_run_predicts_the_same_labels_after_export(runner, digits, digit_runs, tmp_path):
    run = digit_runs["bfloat16"][0]
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(os.path.join(digits, "test")) for f in names)[::6]
    wanted = _labels(runner, run, files)  # computed in bfloat16 (auto on this CPU)
    for fmt in ("savedmodel", "tflite"):
        out = str(tmp_path / fmt)
        r = runner.invoke(app, ["export", run, "--to", fmt, "--out", out, "--parity", "60"])
        assert r.exit_code == 0, r.output
        meta = json.load(open(os.path.join(out, "export.json")))
        assert meta["compute"] == "float32" and meta["input"]["dtype"] == meta["output"]["dtype"] == "float32"
        got = _labels(runner, out, files)
        assert np.mean(np.array(got) == np.array(wanted)) >= 0.98, fmt


def test_the_feature_cache_keeps_bfloat16_activations_exactly_and_pooled_features_in_float32(tmp_path):
    from imgclass_cli._tf import tf
    from imgclass_cli.model import feature_cache

    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    y = np.arange(20) % 2
    for dtype, kept in ((tf().bfloat16, "bfloat16"), (tf().float32, "float32")):
        fn = lambda b, d=dtype: tf().cast(b, d)  # noqa: E731 - the frozen part's output in that dtype
        batches = lambda v: [(x[i:i + 8], y[i:i + 8]) for i in range(0, 20, 8)]  # noqa: E731
        mem = feature_cache.build(fn, [(4,)], batches, 20, 1, disk_parent=str(tmp_path))
        disk = feature_cache.build(fn, [(4,)], batches, 20, 1, disk_parent=str(tmp_path), limit=0)
        assert mem.arrays[0].dtype.name == kept and disk.arrays[0].dtype == np.float32  # .npy: float32
        exact = tf().cast(x, dtype).numpy().astype(np.float32)
        assert np.array_equal(mem.arrays[0].astype(np.float32), exact)  # bfloat16 kept as computed: no loss
        assert np.array_equal(np.asarray(disk.arrays[0]), exact)
        (xb, _), = list(feature_cache.dataset(mem, 20, 0, shuffle=False))
        assert xb.shape == (20, 4)
        disk.close()


@pytest.mark.parametrize("arch", ["cnn", "mobilenetv2"])
def test_apply_precision_computes_the_features_in_the_policy_and_the_rest_in_float32(arch):
    from imgclass_cli.model import build
    from imgclass_cli.model.parts import parts

    model = build.build_classifier(arch, 3, 32, weights="none", trainable_backbone=False)
    x = np.random.default_rng(0).uniform(0, 255, (2, 40, 30, 3)).astype(np.float32)
    reference = model(x).numpy()
    build.apply_precision(model, "mixed_bfloat16")
    p = parts(model)
    assert p.features_of(x).dtype.name == "bfloat16"
    for layer in (p.resize, p.preprocess, p.pool, p.classifier, p.softmax):
        assert layer.compute_dtype == "float32", layer.name
    probs = model(x)
    assert probs.dtype.name == "float32" and np.abs(probs.numpy() - reference).max() < 0.05
    assert all(w.dtype == "float32" for w in model.weights)  # one set of weights for every precision
    build.apply_precision(model, "float32")
    assert p.features_of(x).dtype.name == "float32"
    np.testing.assert_allclose(model(x).numpy(), reference, atol=1e-6)
