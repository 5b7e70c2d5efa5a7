#!/usr/bin/env bash
# Try multi-worker training on one machine: two imgclass processes on 127.0.0.1 (free ports), each with its
# TF_CONFIG. Worker 0 is the chief: it prints the run and writes OUT; worker 1 logs to OUT.worker1.log and
# writes only a temporary folder that it removes.
#
#   examples/multiworker-local.sh DATA OUT [more train options...]
#   e.g. examples/multiworker-local.sh ./flowers runs/two-workers --epochs 5 --batch-size 64
#
# IMGCLASS (default: imgclass) is the command to run; IMGCLASS_COMMAND=finetune switches the subcommand.
# To continue after a failure, run it again with --resume OUT instead of new options.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 DATA OUT [train options...]" >&2
  exit 2
fi
data=$1 out=$2
shift 2
imgclass=${IMGCLASS:-imgclass}
command=${IMGCLASS_COMMAND:-train}
python=${PYTHON:-python3}

# Two free ports: bind to port 0 and let the kernel choose (released just before the workers bind them).
read -r p0 p1 < <("$python" - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)
cluster="{\"worker\": [\"127.0.0.1:$p0\", \"127.0.0.1:$p1\"]}"
tf_config() { echo "{\"cluster\": $cluster, \"task\": {\"type\": \"worker\", \"index\": $1}}"; }

# Resuming: both workers take the same --resume OUT (on one machine they share the chief's checkpoint).
out_args=(--out "$out")
for a in "$@"; do [ "$a" = --resume ] && out_args=(); done

TF_CONFIG=$(tf_config 1) $imgclass "$command" "$data" "${out_args[@]}" "$@" --strategy multiworker --quiet \
  >"$out.worker1.log" 2>&1 &
worker=$!
# If this script is interrupted, stop the worker too (the chief gets the signal from the terminal).
trap 'kill "$worker" 2>/dev/null || true' EXIT
status=0
TF_CONFIG=$(tf_config 0) $imgclass "$command" "$data" "${out_args[@]}" "$@" --strategy multiworker || status=$?
wstatus=0
wait "$worker" || wstatus=$?
trap - EXIT
if [ "$wstatus" -ne 0 ]; then
  echo "worker 1 exited with $wstatus; its log: $out.worker1.log" >&2
fi
exit $(( status != 0 ? status : wstatus ))
