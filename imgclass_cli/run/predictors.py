"""One interface over everything `predict` accepts: a run directory, an export directory, a .tflite or an .onnx file.

A predictor takes a float32 batch (n, image_size, image_size, 3) of 0-255 RGB decoded and resized by
`imagefile.decode` (the `resize` way: squash, crop or pad, as the model was trained) and returns softmax
probabilities (n, num_classes) in `class_names` order. Keras models compute in the precision asked for; the other
formats compute as they were exported (float32).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from imgclass_cli import files
from imgclass_cli._tf import inference_fn, quiet_native_stderr
from imgclass_cli.config import Resize
from imgclass_cli.errors import ImgclassError, first_line
from imgclass_cli.run import rundir



@dataclass
class Target:
    """What a predict/export path points at, found without TensorFlow."""

    kind: str  # run | tflite | savedmodel | keras | onnx
    path: str  # the model file or folder
    class_names: list[str]
    image_size: int | None
    resize: str = "squash"  # export.json's resize mode (a run's comes from its model)

    @property
    def keras(self) -> bool:
        """A Keras model: it computes in any --precision; the other formats as they were exported."""
        return self.kind in ("run", "keras")


def _labels_beside(folder: str) -> list[str]:
    j, t = os.path.join(folder, files.LABELS), os.path.join(folder, files.LABELS_TXT)
    if os.path.exists(j):
        return rundir.check_labels(rundir.read_json(j), j)
    if os.path.exists(t):
        try:
            with open(t, encoding="utf-8", newline="") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ImgclassError(f"{t}: cannot read it ({e})") from None
        return rundir.check_labels([line.rstrip("\r") for line in text.split("\n") if line.strip()], t, "lines")
    raise ImgclassError(f"{folder}: no labels.json or labels.txt beside the model; it names the classes in index order")


def confined(folder: str, name, source: str, field: str) -> str:
    """folder/name when `name` is a relative path that stays inside `folder` after resolving symlinks, else exit 2."""
    if not isinstance(name, str) or not name or "\0" in name or os.path.isabs(name):
        raise ImgclassError(f"{source}: field {field} must be a relative path inside {folder} ({name!r:.80})")
    root = os.path.realpath(folder)
    full = os.path.realpath(os.path.join(folder, name))
    if full != root and not full.startswith(root + os.sep):
        raise ImgclassError(f"{source}: field {field} points outside {folder} ({name!r:.80}); refusing to read it")
    return os.path.join(folder, name)


def _read_export_info(path: str) -> dict:
    """export.json, validated: format, model (confined to the folder), image_size."""
    from imgclass_cli.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, ExportFormat

    source = os.path.join(path, files.EXPORT_INFO)
    meta = rundir.read_json(source)
    if not isinstance(meta, dict):
        raise ImgclassError(f"{source}: not an imgclass export description (a JSON object)")
    if not isinstance(meta.get("format"), str) or meta["format"] not in {f.value for f in ExportFormat}:
        raise ImgclassError(f"{source}: field format is missing or invalid ({meta.get('format')!r:.40})")
    size = meta.get("image_size")
    if not (size is None and meta["format"] == "tflite") and (type(size) is not int or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE):
        raise ImgclassError(f"{source}: field image_size is missing or invalid ({size!r:.40})")
    meta["model"] = confined(path, meta.get("model"), source, "model")
    if meta.get("resize", "squash") not in {r.value for r in Resize}:
        raise ImgclassError(f"{source}: field resize is invalid ({meta.get('resize')!r:.40})")
    return meta


def _export_beside(path: str) -> dict:
    """export.json in the folder of a bare model file, when it is there and describes this file; else {}."""
    folder = os.path.dirname(path) or "."
    if not os.path.exists(os.path.join(folder, files.EXPORT_INFO)):
        return {}
    meta = _read_export_info(folder)
    return meta if os.path.realpath(meta["model"]) == os.path.realpath(path) else {}


def resolve(path: str) -> Target:
    """Recognise a run directory, an export directory (export.json) or a .tflite file."""
    for ext in (".tflite", ".onnx"):
        if os.path.isfile(path) and path.endswith(ext):
            meta = _export_beside(path)
            return Target(ext[1:], path, _labels_beside(os.path.dirname(path) or "."), meta.get("image_size"),
                          meta.get("resize", "squash"))
        if path.endswith(ext) and not os.path.exists(path):
            raise ImgclassError(f"{path}: no such file")
    if os.path.isdir(path) and os.path.exists(os.path.join(path, files.EXPORT_INFO)):
        meta = _read_export_info(path)
        return Target(meta["format"], meta["model"], _labels_beside(path), meta.get("image_size"),
                      meta.get("resize", "squash"))
    info = rundir.read_info(path)  # raises "no such run directory" / "not an imgclass run directory"
    return Target("run", path, info.class_names, info.image_size)


class KerasPredictor:
    """A Keras classifier of imgclass, computing in `policy` (precision.py: float32, mixed_bfloat16, ...)."""

    def __init__(self, model, class_names: list[str], image_size: int, policy: str = "float32"):
        from imgclass_cli.model.build import apply_precision, resize_mode

        apply_precision(model, policy)  # before the first trace
        self.model, self.class_names, self.image_size = model, class_names, image_size
        self.resize = resize_mode(model).value
        self.forward = inference_fn(model)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.forward(images).numpy()


# Ops a classifier's inference graph needs (every backbone imgclass exports uses a subset). Anything else -- file,
# network, Python, debug/print, dataset or queue ops -- makes predict refuse the SavedModel before TensorFlow runs it.
INFERENCE_OPS = frozenset("""
Abs Add AddN AddV2 ArgMax ArgMin AssignAddVariableOp AssignSubVariableOp AssignVariableOp AvgPool AvgPool3D BatchMatMul
BatchMatMulV2 BatchMatMulV3 BiasAdd Cast Ceil ClipByValue Concat ConcatV2 Const Conv2D Conv3D Cos Cumsum
DepthwiseConv2dNative DisableCopyOnRead Div DivNoNan Einsum Elu Equal Erf Exp ExpandDims Fill Floor FloorDiv FloorMod
FusedBatchNorm FusedBatchNormV3 GatherV2 Greater GreaterEqual Identity IdentityN If LeakyRelu Less LessEqual Log
LogSoftmax LogicalAnd LogicalNot LogicalOr MatMul Max MaxPool MaxPoolV2 Maximum Mean Min Minimum MirrorPad Mul Neg
NoOp NotEqual OnesLike Pack Pad PadV2 PartitionedCall Placeholder Pow Prod Range Rank ReadVariableOp RealDiv
Reciprocal Relu Relu6 Reshape ResizeBilinear ResizeNearestNeighbor Round Rsqrt Select SelectV2 Selu Shape ShapeN
Sigmoid Sign Sin Size Slice Softmax Softplus Softsign Split SplitV Sqrt Square SquaredDifference Squeeze
StatefulPartitionedCall StatelessIf StatelessWhile StopGradient StridedSlice Sub Sum Tanh Tile Transpose Unpack
VarHandleOp VarIsInitializedOp While ZerosLike Erfc Expm1 Log1p Atan Tan Sinh Cosh Rint BroadcastTo BroadcastArgs
InvertPermutation Cumprod TopKV2 IsFinite IsNan Where
""".split())
# The checkpoint save/restore functions every SavedModel carries; allowed only in functions that nothing but the
# SavedModel's saver nodes call (loading restores variables without running them; serving never reaches them).
SAVER_OPS = frozenset("MergeV2Checkpoints RestoreV2 SaveV2 ShardedFilename StaticRegexFullMatch StringJoin".split())


def _called(node) -> list[str]:
    """Functions a NodeDef calls through its attributes (f, then_branch, body, ...)."""
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names += [f.name for f in value.list.func]
    return names


MAX_GRAPH_BYTES = 2**31  # protobuf refuses a message over 2 GB


def check_savedmodel_ops(path: str) -> None:
    """Refuse (exit 2, naming the op and the file) a SavedModel whose graph holds an op outside INFERENCE_OPS."""
    from imgclass_cli._tf import tf

    tf()  # imgclass's quiet import first: importing the protobuf module alone would load TensorFlow with its logs
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(path, "saved_model.pb")
    sm = saved_model_pb2.SavedModel()
    try:
        if os.path.getsize(pb) > MAX_GRAPH_BYTES:
            raise ImgclassError(f"{pb}: larger than {MAX_GRAPH_BYTES // 2**30} GB, protobuf's limit for a graph")
        with open(pb, "rb") as f:
            sm.ParseFromString(f.read())
    except (OSError, ValueError, RuntimeError, DecodeError) as e:  # DecodeError: not a ValueError under upb
        raise ImgclassError(f"{pb}: cannot read the SavedModel graph ({first_line(e)}; truncated or corrupt?)") from None
    for mg in sm.meta_graphs:
        library = {f.signature.name: f for f in mg.graph_def.library.function}
        saver_nodes = {mg.saver_def.save_tensor_name.split(":")[0].lstrip("^"), mg.saver_def.restore_op_name.split(":")[0]}

        def reach(nodes) -> set[str]:
            seen, todo = set(), [name for n in nodes for name in _called(n)]
            while todo:
                name = todo.pop()
                if name not in seen and name in library:
                    seen.add(name)
                    todo += [c for n in library[name].node_def for c in _called(n)]
            return seen

        graph = list(mg.graph_def.node)
        saver_only = reach([n for n in graph if n.name in saver_nodes]) - reach([n for n in graph if n.name not in saver_nodes])
        found = [(n.op, n.name) for n in graph]
        for name, fn in library.items():
            found += [(n.op, f"{name}/{n.name}") for n in fn.node_def
                      if not (n.op in SAVER_OPS and name in saver_only)]
        for op, where in found:
            if op not in INFERENCE_OPS:
                raise ImgclassError(f"{pb}: the graph holds the op {op!r} ({where}), which an image classifier does "
                                    "not need; refusing to run it (imgclass runs only graphs of inference ops)")


class SavedModelPredictor:
    def __init__(self, path: str, class_names: list[str], image_size: int):
        from imgclass_cli._tf import tf

        check_savedmodel_ops(path)
        try:
            with quiet_native_stderr():  # a corrupt variables file makes TensorFlow's C++ log to fd 2
                self.fn = tf().saved_model.load(path).signatures["serving_default"]
        except Exception as e:
            raise ImgclassError(f"{path}: cannot load the SavedModel ({first_line(e)})") from None
        self.class_names, self.image_size, self.resize = class_names, image_size, "squash"
        n_out = next(iter(self.fn.structured_outputs.values())).shape[-1]
        if n_out != len(class_names):
            raise ImgclassError(f"{path}: the model has {n_out} outputs but the labels file names {len(class_names)} classes")

    def predict(self, images: np.ndarray) -> np.ndarray:
        out = self.fn(image=np.asarray(images, dtype=np.float32))
        return next(iter(out.values())).numpy()


def interpreter_class():
    """The LiteRT runtime (`pip install imgclass[litert]`, package ai-edge-litert) where installed; else
    TensorFlow's tf.lite.Interpreter, deprecated in its favour (its deprecation warning is silenced)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        from imgclass_cli._tf import tf

        warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated.*")
        return tf().lite.Interpreter


class TFLitePredictor:
    """A TFLite interpreter with a batch dimension that follows the input (resized only when it changes)."""

    def __init__(self, path: str, class_names: list[str], image_size: int | None = None, num_threads: int | None = None):
        from imgclass_cli.run import tflitefile

        # From checked bytes, not the path: the interpreter verifies a buffer it is given, never a file it maps.
        self.content = tflitefile.read(path)
        try:
            with quiet_native_stderr():
                self.interp = interpreter_class()(model_content=self.content, num_threads=num_threads or os.cpu_count())
        except (ValueError, RuntimeError) as e:
            raise ImgclassError(f"{path}: not a TFLite model ({first_line(e)})") from None
        try:  # the details of a corrupt model: names that are not UTF-8, tensors without a shape
            self._check_model(path, image_size, class_names)
        except (ValueError, RuntimeError, UnicodeDecodeError, IndexError) as e:
            raise ImgclassError(f"{path}: not a TFLite model imgclass can run ({first_line(e)})") from None
        self.class_names = class_names
        self.batch = None

    def _check_model(self, path: str, image_size: int | None, class_names: list[str]) -> None:
        """Builtin ops only, one (batch, size, size, 3) input of at most MAX_IMAGE_SIZE, one output per class."""
        from imgclass_cli.config import MAX_IMAGE_SIZE

        # Builtin TFLite ops are pure math; a Flex (TensorFlow) or custom op could do anything, e.g. FlexWriteFile.
        names = sorted({d["op_name"] for d in getattr(self.interp, "_get_ops_details", list)()})
        foreign = [n for n in names if not (n.replace("_", "").isalnum() and n.isupper())]
        if foreign:
            raise ImgclassError(f"{path}: the model holds the non-builtin op {foreign[0]!r}, which an image classifier "
                                "does not need; refusing to run it (imgclass runs only builtin TFLite ops)")
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]
        shape = self.input["shape_signature"]
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2] or not 0 < shape[1] <= MAX_IMAGE_SIZE:
            raise ImgclassError(f"{path}: expected an input of shape (batch, size, size, 3) with a size of at most "
                                f"{MAX_IMAGE_SIZE}, found {list(shape)}")
        self.image_size = int(shape[1])
        if image_size is not None and image_size != self.image_size:
            raise ImgclassError(f"{path}: input size {self.image_size} differs from export.json's {image_size}")
        n_out = int(self.output["shape_signature"][-1])
        if n_out != len(class_names):
            raise ImgclassError(f"{path}: the model has {n_out} outputs but the labels file names {len(class_names)} classes")
        self.fixed_batch = int(shape[0]) if 0 < shape[0] <= 2**16 else None
        with quiet_native_stderr():  # the tensors of one batch: a model that cannot allocate fails here, not mid-run
            self.interp.allocate_tensors()
        self.resize = "squash"

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.batch != len(x):
            self.interp.resize_tensor_input(self.input["index"], list(x.shape))
            with quiet_native_stderr():
                self.interp.allocate_tensors()
            self.batch = len(x)
        self.interp.set_tensor(self.input["index"], x)
        self.interp.invoke()
        return self.interp.get_tensor(self.output["index"]).copy()

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        if self.fixed_batch is None:
            return self._run(x)
        step = self.fixed_batch  # a model exported with batch 1: feed it one image at a time
        return np.concatenate([self._run(x[i:i + step]) for i in range(0, len(x), step)])


def load(path: str, policy: str = "float32"):
    """A predictor for a run directory, an export directory, a .tflite or an .onnx file; a Keras model computes in
    `policy`, the other formats as they were exported."""
    target = resolve(path)
    predictor = _load(path, target, policy)
    if not target.keras:
        predictor.resize = target.resize  # export.json's: the decoder resizes the way the model was trained
    return predictor


def _load(path: str, target: Target, policy: str):
    if target.kind == "run":
        model, info = rundir.load(path)
        return KerasPredictor(model, info.class_names, info.image_size, policy)
    if target.kind == "tflite":
        return TFLitePredictor(target.path, target.class_names, target.image_size)
    if target.kind == "onnx":
        return OnnxPredictor(target.path, target.class_names, target.image_size)
    if target.kind == "savedmodel":
        return SavedModelPredictor(target.path, target.class_names, int(target.image_size))
    if target.kind == "keras":
        from imgclass_cli.model.build import load_model

        try:
            model = load_model(target.path)
        except Exception as e:
            raise ImgclassError(f"{target.path}: cannot load the model ({first_line(e)})") from None
        rundir.check_outputs(model, target.class_names, target.path, os.path.join(path, files.LABELS_TXT))
        return KerasPredictor(model, target.class_names, int(target.image_size), policy)
    raise ImgclassError(f"{path}: unknown export format {target.kind!r}")


def onnxruntime():
    """The ONNX Runtime module, or an ImgclassError saying how to install it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImgclassError("reading an .onnx model needs ONNX Runtime: pip install 'imgclass[onnx]'") from None
    return ort


class OnnxPredictor:
    """An ONNX Runtime session (CPU) over an image classifier: one float32 input (batch, size, size, 3) of 0-255 RGB,
    one output (batch, classes) of probabilities. Anything else is refused before it runs."""

    def __init__(self, path: str, class_names: list[str], image_size: int | None = None,
                 num_threads: int | None = None):
        ort = onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or os.cpu_count() or 1
        options.log_severity_level = 3  # errors only: its warnings go to fd 2 unasked
        try:
            with quiet_native_stderr():
                self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise ImgclassError(f"{path}: not an ONNX model ONNX Runtime can run ({first_line(e)})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input = inputs[0].name if inputs else None
        self.image_size = _image_input_size(path, inputs)
        if image_size is not None and image_size != self.image_size:
            raise ImgclassError(f"{path}: input size {self.image_size} differs from export.json's {image_size}")
        shape = list(outputs[0].shape) if len(outputs) == 1 else []
        if len(shape) != 2 or not isinstance(shape[1], int):
            raise ImgclassError(f"{path}: expected one output of shape (batch, classes), found "
                                f"{[list(o.shape) for o in outputs]}")
        if shape[1] != len(class_names):
            raise ImgclassError(f"{path}: the model has {shape[1]} outputs but the labels file names "
                                f"{len(class_names)} classes")
        self.class_names, self.resize = class_names, "squash"

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.asarray(images, dtype=np.float32)})[0]


def _image_input_size(path: str, inputs) -> int:
    """The square size of an ONNX model's one image-batch input; an ImgclassError naming what it found otherwise."""
    found = [f"{i.name} {list(i.shape)} {i.type}" for i in inputs]
    shape = list(inputs[0].shape) if len(inputs) == 1 else []
    square = (len(shape) == 4 and shape[3] == 3 and isinstance(shape[1], int) and shape[1] == shape[2]
              and shape[1] > 0)
    if not square or inputs[0].type != "tensor(float)":
        raise ImgclassError(f"{path}: not an image classifier imgclass can feed: expected one float input of shape "
                            f"(batch, size, size, 3), found {'; '.join(found) or 'no inputs'}")
    return int(shape[1])
