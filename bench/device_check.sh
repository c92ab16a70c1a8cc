#!/usr/bin/env bash
# The GPU check, wheels included. Not yet timed on a GPU since synthetic variants became real bundles
# (a random 7B checkpoint, then each method's bundle of it); PAIRS, BATCHES and SHAPE trim it.
#
#   bash bench/fetch_wheels.sh                  # here, once: .whl/ for the GPU machine (~50 MB)
#   bash bench/device_check.sh                  # there, from the repository root (OUT names the result folder)
#   SHAPE=tiny DEVICE=cpu WHEELS= bash bench/device_check.sh   # the same steps on a CPU, tiny shapes
# PYTHON names the interpreter (default python3); WHEELS the wheel folder (default .whl, empty: none).
#
# 1. full-size AITQE shapes (Qwen2-7B + SigLIP so400m, random-weight bundles): bf16 vs bnb-int8 vs bnb-nf4
#    vs gptq-int4, cost and measured consumer-GPU fit, vision tower included;
# 2. the demo model quantized by every method on this device, accuracy + cost against its 16-bit self.
# Reports and JSON go to $OUT (each results.json is rewritten after every variant); the summary table
# of step 1 is printed last.
set -euo pipefail
OUT=${OUT:-/tmp/aitqe-device-check}
SHAPE=${SHAPE:-full}
DEVICE=${DEVICE:-cuda}
PAIRS=${PAIRS:-demo:64}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS-.whl}
WORK=$(mktemp -d /tmp/aitqe-check-XXXXXX)
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -n "$WHEELS" ] && compgen -G "$WHEELS/*.whl" > /dev/null; then
  $PYTHON -m pip install -q --no-index --no-deps --target "$WORK/site" "$WHEELS"/*.whl
  export PYTHONPATH=$PYTHONPATH:$WORK/site
fi
$PYTHON -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"

$PYTHON -m bench --synthetic "$SHAPE" --device "$DEVICE" --repeats 2 --batch-sizes "${BATCHES:-1,16}" \
  --output "$OUT/bench-$SHAPE" 2> "$OUT/bench-$SHAPE.log" > "$OUT/bench-$SHAPE.txt" \
  || echo "synthetic bench failed: see $OUT/bench-$SHAPE.log" | tee -a "$OUT/bench-$SHAPE.txt"

for m in bf16 bnb-int8 bnb-nf4 gptq-int4; do
  $PYTHON -m quantize --model runtime/demo/aitqe-demo --method "$m" --device "$DEVICE" \
    --output "$WORK/bundles/demo-$m" > "$OUT/quantize-$m.log" 2>&1 || echo "quantize $m failed: see $OUT/quantize-$m.log"
done
$PYTHON -m runtime.score --model "$WORK/bundles/demo-gptq-int4" --device "$DEVICE" \
  --image examples/green_square_red_cross.png --caption "big green square top right, small red cross left" \
  > "$OUT/score-gptq-int4.json" || true
$PYTHON -m bench --reference runtime/demo/aitqe-demo --candidates "$WORK"/bundles/demo-* --pairs "$PAIRS" \
  --device "$DEVICE" --repeats 2 --output "$OUT/bench-demo" --no-plots > /dev/null 2> "$OUT/bench-demo.log" \
  || echo "demo bench failed: see $OUT/bench-demo.log"

rm -rf "$WORK"
echo
echo "demo model, every method on $DEVICE (accuracy vs its 16-bit self): $OUT/bench-demo/report.md"
sed -n '/^## Summary/,/^## Accuracy/p' "$OUT/bench-demo/report.md" | grep '^|' || true
echo
echo "AITQE $SHAPE shapes, random weights, on $DEVICE:"
cat "$OUT/bench-$SHAPE.txt"
