"""The names of the files imgclass writes: one table for run directories, evaluate's outputs, exports, prepared
folders, example exports and checkpoints (docs/guide.md describes each file)."""

from __future__ import annotations

# The `.imgclass` marker in every folder imgclass makes (fs.py: the ownership rule).
MARKER = ".imgclass"

# A run directory (train, finetune).
MODEL = "model.keras"  # preprocessing inside: raw 0-255 RGB in, softmax out
LABELS = "labels.json"  # class names in index order
CONFIG = "config.json"  # every option, the data, the image size, library versions
HISTORY = "history.csv"  # one row per epoch
SPLIT = "split.csv"  # which image was in train and which in val
TIMINGS = "timings.json"  # seconds per stage
CURVES_PNG = "training_curves.png"
AUGMENT_PREVIEW = "augment_preview.png"  # a grid of augmented training images (with --augment)
TENSORBOARD = "tensorboard"  # --tensorboard logs (a folder)
EXPLAIN_DIR = "explain"  # `imgclass explain` without --out: NAME.png and NAME.npy per image (a folder)

# What evaluate writes (into the run directory, or beside `evaluate --out FILE`).
METRICS = "metrics.json"
MISCLASSIFIED = "misclassified.csv"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"  # the reliability diagram, before and after calibration; shown in the report
REPORT_HTML = "report.html"  # one self-contained page: metrics, tables, figures, the mistakes gallery
MISTAKES_PNG = "mistakes.png"  # the gallery of the most confident mistakes with their Grad-CAM overlays
EVALUATE_FILES = (MISCLASSIFIED, CONFUSION_PNG, RELIABILITY_PNG, REPORT_HTML, MISTAKES_PNG)  # beside METRICS

RUN_FILES = (CONFIG, MODEL, LABELS, HISTORY, METRICS, SPLIT, TIMINGS, CURVES_PNG, AUGMENT_PREVIEW, *EVALUATE_FILES)

# An audit folder (imgclass audit --out DIR).
AUDIT_JSON = "audit.json"  # everything the audit found, with its thresholds
AUDIT_ISSUES = "issues.csv"  # one row per issue: path, issue, score, given, suggested, other
AUDIT_HTML = "audit.html"  # one self-contained page: counts, how each check ran, a gallery per kind found
AUDIT_FILES = (AUDIT_JSON, AUDIT_ISSUES, AUDIT_HTML)

# An export directory (imgclass export).
EXPORT_INFO = "export.json"
LABELS_TXT = "labels.txt"
TFLITE_FILE = "model.tflite"
SAVEDMODEL_DIR = "saved_model"
ONNX_FILE = "model.onnx"
KERAS_FILE = MODEL

# A prepared folder (imgclass prepare).
MANIFEST = "manifest.csv"  # its presence makes a folder a prepared dataset
PREPARE_INFO = "prepare.json"

# An example or tensorflow-datasets export (prepare --example / --from-tfds): where the images came from.
SOURCE_TXT = "SOURCE.txt"

# A checkpoint folder `.NAME.checkpoint` beside an unfinished run.
STATE = "state.json"
WEIGHTS = "weights.npz"
OPTIMIZER = "optimizer.npz"
# What a checkpoint folder may hold while it is being written (temporary names included).
CHECKPOINT_PATTERNS = (STATE, WEIGHTS, OPTIMIZER, ".*.tmp")
