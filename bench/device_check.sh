#!/usr/bin/env bash
# The GPU check for one device command (window 560 s by default on one H100/H200; the plan is printed first).
# Steps run in order of value, each with its own time budget, each skipped when the window has less time
# left than its budget; each step's results are appended to $OUT/results.jsonl as soon as it ends (a
# time-out keeps what bench.cost measured so far), so a run killed half-way keeps every step before it.
#
#   bash bench/fetch_wheels.sh                  # here, once: .whl/ with only what the device lacks
#   bash bench/device_check.sh                  # there, from the repository root (OUT names the result folder)
#   SHAPE=tiny DEVICE=cpu WHEELS= bash bench/device_check.sh   # the same steps on a CPU, tiny shapes
# PYTHON names the interpreter (default python3); WHEELS the wheel folder (default .whl, empty: none);
# WORK the work folder (default a new one under /tmp, never inside OUT); BATCHES, STREAM trim the work;
# WINDOW_S the whole window's budget.
#
# 0. preflight: card, driver, CUDA, cuDNN, free disk and memory, compilers, SDPA's backend for the exact
#    decode and prefill shapes (preflight.json); a background Marlin build starts (CUDA, gptqmodel present).
# 1. bf16, fast engine, straight from a random checkpoint folder of AITQE's shapes (no bundle): prefill,
#    decode ms/step, ms/pair, peak memory at batch 1, stream pairs/s, compiles.
# 2. the decode-attention probe (bench.attention): masked GQA SDPA, math SDPA, the engine's grouped matmuls.
# 3-4. fp8 (torchao) compiled, then eager. 5. bnb-nf4. 6. gptq-int4, only once the Marlin build finished
#    (on CPU: GPTQModel's torch kernel). 7. the vision tower. 8. bf16 with the reference engine, last.
# Then $OUT holds at most 8 files: preflight.json, results.jsonl, steps.txt, logs.tgz (every log),
# summary.json, summary.txt; the summary table is printed too (python -m bench.device_summary OUT).
set -uo pipefail
case "${1:-}" in
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "error: bench/device_check.sh takes no arguments (settings are environment variables); see --help" >&2; exit 2 ;;
esac
OUT=${OUT:-/tmp/aitqe-device-check}
SHAPE=${SHAPE:-full}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS-.whl}
WORK=${WORK:-$(mktemp -d /tmp/aitqe-check-XXXXXX)}
if [ "$SHAPE" = tiny ]; then
  BATCHES=${BATCHES:-1,2}; STREAM=${STREAM:-4}; NEW=6; LENGTHS=uniform:2:6; PAIRS=4; PROBE="--slots 1,4 --lengths 256 --layers 2"
  B_INPUTS=90; B_BF16=150; B_ATTN=60; B_FP8=120; B_FP8E=60; B_NF4=120; B_GPTQ=120; B_TOWER=90; B_REF=90; MARLIN_S=0; WINDOW_MAX=100000
else
  BATCHES=${BATCHES:-1,16,64}; STREAM=${STREAM:-128}; NEW=64; LENGTHS=uniform:16:64; PAIRS=64; PROBE=
  B_INPUTS=90; B_BF16=150; B_ATTN=20; B_FP8=100; B_FP8E=50; B_NF4=100; B_GPTQ=60; B_TOWER=25; B_REF=40; MARLIN_S=400
  WINDOW_MAX=560  # the device runs one command for at most 600 s: end in time to pack and summarise
fi
PLAN=$((B_INPUTS + B_BF16 + B_ATTN + B_FP8 + B_FP8E + B_NF4 + B_GPTQ + B_TOWER + B_REF + 30))
WINDOW_S=${WINDOW_S:-$((PLAN < WINDOW_MAX ? PLAN : WINDOW_MAX))}
case "$WORK" in "$OUT"|"$OUT"/*) echo "error: WORK must lie outside OUT (only 8 files come back)" >&2; exit 2 ;; esac
mkdir -p "$OUT" "$WORK/logs"
: > "$OUT/steps.txt"; : > "$OUT/results.jsonl"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -n "$WHEELS" ] && compgen -G "$WHEELS/*.whl" > /dev/null; then  # appended: the device's own packages win
  $PYTHON -m pip install -q --no-index --no-deps --target "$WORK/site" "$WHEELS"/*.whl
  export PYTHONPATH=$PYTHONPATH:$WORK/site PATH=$PATH:$WORK/site/bin
fi
echo "plan: $PLAN s of step budgets (window $WINDOW_S s), work in $WORK, results in $OUT" | tee -a "$OUT/steps.txt" >&2

pack() { tar czf "$OUT/logs.tgz.tmp" -C "$WORK" logs 2>/dev/null && mv "$OUT/logs.tgz.tmp" "$OUT/logs.tgz"; }
step() {  # step NAME BUDGET RESULT COMMAND...: run within its budget (SIGINT first: bench.cost keeps its partial file)
  local name=$1 budget=$2 result=$3 start=$SECONDS rc
  shift 3
  if [ $((WINDOW_S - SECONDS)) -lt "$budget" ]; then
    echo "$name: skipped, $((WINDOW_S - SECONDS)) s left of the window (budget $budget s)" | tee -a "$OUT/steps.txt" >&2
    return
  fi
  timeout -s INT -k 10 "$budget" "$@" > "$WORK/logs/$name.log" 2>&1
  rc=$?
  $PYTHON -m bench.device_steps record "$OUT" "$name" $rc $((SECONDS - start)) "$budget" "$result" "$WORK/logs/$name.log"
  echo "$name: exit $rc after $((SECONDS - start)) s (budget $budget s)" | tee -a "$OUT/steps.txt" >&2
  pack
}

$PYTHON -m bench.device_steps preflight "$WORK" "$OUT" > "$OUT/preflight.json" 2> "$WORK/logs/preflight.log"
cat "$OUT/preflight.json" >&2
if [ "$DEVICE" = cuda ] && [ "$MARLIN_S" -gt 0 ] && $PYTHON -c "import gptqmodel" 2>/dev/null; then
  ( TORCH_CUDA_ARCH_LIST=$($PYTHON -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") \
    MAX_JOBS=$(nproc) timeout "$MARLIN_S" $PYTHON -c "import torch; from gptqmodel.utils.marlin import prewarm_marlin_extension as p; p(torch.float16)" \
    > "$WORK/logs/marlin-build.log" 2>&1; echo $? > "$WORK/marlin.rc" ) &
  trap 'kill $! 2>/dev/null' EXIT  # a build still running when the window ends stops with it
else
  echo 0 > "$WORK/marlin.rc"  # no Marlin to build: GPTQModel's torch kernel
fi

CK=$WORK/checkpoint PF=$WORK/pairs/pairs.jsonl
cost() {  # cost NAME MODEL ARGS...: bench.cost writing its partial results to $WORK/NAME.json
  local name=$1 model=$2
  shift 2
  $PYTHON -m bench.cost --model "$model" --pairs "$PF" --device "$DEVICE" --repeats 2 --no-fit \
    --max-new-tokens $NEW --lengths $LENGTHS --partial "$WORK/$name.json" "$@"
}
built() { $PYTHON -m bench.device_steps bundle "$CK" "$1" "$WORK/$1" "$DEVICE" && cost "$1" "$WORK/$1" "${@:2}"; }
export -f cost built
export PYTHON DEVICE NEW LENGTHS WORK CK PF

step inputs "$B_INPUTS" /dev/null $PYTHON -m bench.device_steps inputs "$SHAPE" "$WORK" "$DEVICE" $PAIRS
step bf16 "$B_BF16" "$WORK/bf16.json" bash -c 'cost bf16 "$CK" --batch-sizes '"$BATCHES"' --stream-pairs '"$STREAM"
step attention "$B_ATTN" "$WORK/attention.jsonl" $PYTHON -m bench.attention --shape "$SHAPE" --device "$DEVICE" \
  --out "$WORK/attention.jsonl" $PROBE
step fp8 "$B_FP8" "$WORK/fp8.json" bash -c 'built fp8 --batch-sizes 1 --compile on'
step fp8-eager "$B_FP8E" "$WORK/fp8-eager.json" bash -c '[ -d "$WORK/fp8" ] && cost fp8-eager "$WORK/fp8" --batch-sizes 1 --compile off'
step bnb-nf4 "$B_NF4" "$WORK/bnb-nf4.json" bash -c 'built bnb-nf4 --batch-sizes 1'
while [ ! -f "$WORK/marlin.rc" ] && [ $((WINDOW_S - SECONDS)) -gt $((B_GPTQ + B_TOWER + B_REF)) ]; do sleep 5; done
if [ "$(cat "$WORK/marlin.rc" 2>/dev/null)" = 0 ]; then
  step gptq-int4 "$B_GPTQ" "$WORK/gptq-int4.json" bash -c 'built gptq-int4 --batch-sizes 1'
else
  echo "gptq-int4: skipped, the Marlin build had not finished (logs.tgz: marlin-build.log)" | tee -a "$OUT/steps.txt" >&2
fi
step tower "$B_TOWER" "$WORK/tower.json" bash -c "$PYTHON -m bench.tower --shape $SHAPE --device $DEVICE --batch-sizes 1,32 --repeats 3 > \$WORK/tower.json"
step reference "$B_REF" "$WORK/reference.json" bash -c 'cost reference "$CK" --batch-sizes 1 --engine reference'
pack
$PYTHON -m bench.device_summary "$OUT" | tee "$OUT/summary.txt"
