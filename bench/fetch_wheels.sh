#!/usr/bin/env bash
# Wheels for what the GPU machine lacks (../shared/device/README.md: Python 3.12, x86-64, torch 2.11 on
# CUDA 13, transformers, accelerate, onnx, onnxruntime, triton, numpy, pandas, matplotlib, nvcc), into
# .whl/ (ignored by .gitignore): bitsandbytes (its CUDA 13 library only: the other builds are 90% of its
# 43 MB), torchao (fp8), GPTQModel and what it imports at run time that those packages do not bring
# (ninja for its JIT build). Left out: what the device has (protobuf with onnx, regex with transformers,
# click, idna, certifi with huggingface_hub) and what the device check never imports (rouge-score, nltk).
# Packages published only as sources are built here: pypcre has C code, so it needs a Python 3.12
# (PY312: its command, default python3.12). Prints what a device run carries (tracked files + .whl),
# at most 64 MiB. Run from the repository root.
set -euo pipefail
PY312=${PY312:-python3.12}
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl bitsandbytes==0.50.2 torchao==0.18.0 ninja threadpoolctl dill \
  requests urllib3 charset-normalizer
python3 -m bench.device_steps trim .whl/bitsandbytes-*.whl _cpu. _cuda130. _cuda132.
$PY312 -m pip wheel -q --no-deps -w .whl pypcre device-smi tokenicer logbar defuser
python3 -m pip wheel -q --no-deps -w .whl gptqmodel==7.7.0   # pure Python: its kernels compile on first use
wheels=$(du -cb .whl/*.whl | tail -1 | cut -f1)
repo=$(git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "carried: $(( (wheels + repo) >> 20 )) MiB (wheels $((wheels >> 20)) MiB, repository $((repo >> 20)) MiB) of 64 MiB"
[ $((wheels + repo)) -le $((64 << 20)) ] || { echo "error: a device run carries at most 64 MiB; remove some wheels" >&2; exit 1; }
