#!/usr/bin/env bash
# A CI job: train on DATA, gate on held-out metrics, export a checked int8 TFLite model.
#
#   examples/ci-job.sh DATA [OUT]
#
# DATA is a folder with train/ (and val/, test/) class folders, e.g. `imgclass prepare --example digits demo/digits`.
# Exit codes are imgclass's: 0 ship it, 3 a quality gate failed (metrics too low, or the export changed the
# predictions), 2 bad input, 1 a broken job. Thresholds and sizes come from the environment so the CI
# configuration, not this script, decides them.
set -euo pipefail

DATA=${1:?usage: ci-job.sh DATA [OUT]}
OUT=${2:-ci-out}
GATE=${IMGCLASS_FAIL_UNDER:-accuracy=0.9,f1_macro=0.85}
export IMGCLASS_SEED=${IMGCLASS_SEED:-42}          # same data + same seed = same split and the same model
export IMGCLASS_IMAGE_SIZE=${IMGCLASS_IMAGE_SIZE:-32}
export IMGCLASS_EPOCHS=${IMGCLASS_EPOCHS:-10}
export NO_COLOR=1                                   # plain logs

mkdir -p "$OUT/eval"
RUN="$OUT/run"

echo "::group::train"
imgclass train "$DATA" --out "$RUN" --force --augment none
echo "::endgroup::"

# Evaluate on the held-out split; the metrics, misclassified.csv and confusion_matrix.png land in $OUT/eval.
# A failing gate stops the job here (set -e) with exit code 3 and one line saying which metric fell short.
echo "::group::evaluate"
imgclass evaluate "$RUN" "$DATA" --format json --out "$OUT/eval/metrics.json" --fail-under "$GATE" \
  > "$OUT/eval/stdout.json"
python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print("accuracy %.4f  f1_macro %.4f" % (m["accuracy"], m["f1_macro"]))' \
  "$OUT/eval/metrics.json"
echo "::endgroup::"

# Export with a parity check against the Keras model; below 99% top-1 agreement nothing is written (exit 3).
echo "::group::export"
imgclass export "$RUN" --to tflite --quantize int8 --out "$OUT/model-int8" --force --min-agreement 0.99
imgclass export "$RUN" --to savedmodel --out "$OUT/savedmodel" --force
echo "::endgroup::"

# Smoke-test the shipped artifact the way a consumer uses it: paths on stdin, JSON lines out, strict.
echo "::group::smoke test"
find "$DATA" -type f \( -name '*.png' -o -name '*.jpg' \) | sort | sed -n 1,20p \
  | imgclass predict "$OUT/model-int8/model.tflite" - --format jsonl --strict > "$OUT/smoke.jsonl"
echo "$(wc -l < "$OUT/smoke.jsonl") predictions from the int8 TFLite model"
echo "::endgroup::"
