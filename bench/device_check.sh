#!/usr/bin/env bash
# The GPU check, wheels included, sized for about 6 minutes on one H100/H200; each step has a time
# budget and keeps what it measured when it runs out. Not yet run on a GPU.
#
#   bash bench/fetch_wheels.sh                  # here, once: .whl/ for the GPU machine (< 64 MiB)
#   bash bench/device_check.sh                  # there, from the repository root (OUT names the result folder)
#   SHAPE=tiny DEVICE=cpu WHEELS= bash bench/device_check.sh   # the same steps on a CPU, tiny shapes
# PYTHON names the interpreter (default python3); WHEELS the wheel folder (default .whl, empty: none);
# METHODS, BATCHES, STREAM, DEMO_METHODS, PAIRS, CAL trim the work; BENCH_S, TOWER_S, DEMO_S the budgets.
#
# 1. AITQE's full shapes (Qwen2-7B + SigLIP so400m), random-weight bundles built on the device:
#    METHODS (default bf16, gptq-int4, fp8, bnb-nf4); bf16 with the fast and the reference engine;
#    prefill, decode ms/step, ms/pair and peak memory at batch 1, stream pairs/s, measured fit under
#    8/12/16/24 GiB caps, the kernel each method's linear layers ran on (gptq: Marlin when it builds).
# 2. the vision tower alone, bf16, PyTorch SDPA against eager attention, batch 1 and 32 (onnxruntime's
#    CUDA provider only where onnxruntime-gpu is installed: its wheel is too big to carry).
# 3. the demo model quantized on the device by DEMO_METHODS, agreement with its 16-bit self.
# 4. one summary (python -m bench.device_summary): table, the issue's checks, consumer-GPU projection;
#    JSON in $OUT (summary.json, env.json, tower.json, bench-*/results.json, bench-demo/results.json).
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
METHODS=${METHODS:-bf16,gptq-int4,fp8,bnb-nf4}
BATCHES=${BATCHES:-1,16}
STREAM=${STREAM:-8}
DEMO_METHODS=${DEMO_METHODS:-gptq-int4,fp8,bnb-nf4}
PAIRS=${PAIRS:-demo:32}
CAL=${CAL:-128}
BENCH_S=${BENCH_S:-240}
TOWER_S=${TOWER_S:-30}
DEMO_S=${DEMO_S:-75}
WORK=$(mktemp -d /tmp/aitqe-check-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
: > "$OUT/steps.txt"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -n "$WHEELS" ] && compgen -G "$WHEELS/*.whl" > /dev/null; then
  $PYTHON -m pip install -q --no-index --no-deps --target "$WORK/site" "$WHEELS"/*.whl
  export PYTHONPATH=$PYTHONPATH:$WORK/site PATH=$WORK/site/bin:$PATH  # site/bin: ninja, for GPTQModel's JIT
  for bin in "$WORK"/site/nvidia/*/bin "$WORK"/site/nvidia/cuda_nvcc/bin; do  # nvcc from a wheel: Marlin's JIT
    if [ -x "$bin/nvcc" ]; then export PATH=$bin:$PATH CUDA_HOME=${bin%/bin}; fi
  done
fi

step() {  # step NAME SECONDS COMMAND...: run with a time budget (SIGINT: bench writes what it measured)
  local name=$1 budget=$2 start=$SECONDS rc
  shift 2
  timeout -s INT -k 20 "$budget" "$@"
  rc=$?
  echo "$name: exit $rc after $((SECONDS - start)) s (budget $budget s)" | tee -a "$OUT/steps.txt" >&2
}

$PYTHON - > "$OUT/env.json" <<'EOF'
import importlib.metadata as md, json, shutil, torch, transformers
cuda = torch.cuda.is_available()
libs = {}
for name in ("gptqmodel", "torchao", "bitsandbytes", "onnxruntime", "onnxruntime-gpu", "triton"):
    try:
        libs[name] = md.version(name)
    except md.PackageNotFoundError:
        libs[name] = None
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
                  "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
                  "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
                  "nvcc": shutil.which("nvcc"), "libraries": libs}))
EOF
cat "$OUT/env.json" >&2

step "1 $SHAPE shapes, $METHODS" "$BENCH_S" $PYTHON -m bench --synthetic "$SHAPE" --methods "$METHODS" \
  --device "$DEVICE" --repeats 2 --batch-sizes "$BATCHES" --stream-pairs "$STREAM" --no-plots \
  --output "$OUT/bench-$SHAPE" > "$OUT/bench-$SHAPE.txt" 2> "$OUT/bench-$SHAPE.log"

step "2 vision tower" "$TOWER_S" $PYTHON -m bench.tower --shape "$SHAPE" --device "$DEVICE" --batch-sizes 1,32 \
  --repeats 3 > "$OUT/tower.json" 2> "$OUT/tower.log"

demo() {
  local bundles=()
  for m in ${DEMO_METHODS//,/ }; do
    if $PYTHON -m quantize --model runtime/demo/aitqe-demo --method "$m" --device "$DEVICE" \
         --calibration-samples "$CAL" --output "$WORK/bundles/demo-$m" > "$OUT/quantize-$m.log" 2>&1; then
      bundles+=("$WORK/bundles/demo-$m")
    else
      echo "quantize $m failed: see $OUT/quantize-$m.log" >&2
    fi
  done
  [ ${#bundles[@]} -gt 0 ] && $PYTHON -m bench --reference runtime/demo/aitqe-demo --candidates "${bundles[@]}" \
    --pairs "$PAIRS" --device "$DEVICE" --no-cost --no-plots --output "$OUT/bench-demo" > /dev/null 2> "$OUT/bench-demo.log"
}
export -f demo
export OUT DEVICE PYTHON DEMO_METHODS PAIRS WORK CAL
step "3 demo model, $DEMO_METHODS on $DEVICE" "$DEMO_S" bash -c demo

if [ -f "$OUT/bench-demo/report.md" ]; then
  echo
  echo "demo model quantized on $DEVICE, agreement with its 16-bit self ($PAIRS):"
  sed -n '/^## Summary/,/^## Accuracy/p' "$OUT/bench-demo/report.md" | grep '^|' | cut -d'|' -f2-7 | sed 's/$/|/'
fi
$PYTHON -m bench.device_summary "$OUT"
