#!/usr/bin/env bash
# Wheels that the GPU machine (Python 3.12, x86-64, torch + transformers only) lacks, into .whl/
# (ignored by .gitignore; at most 64 MiB travel with a device run): bitsandbytes, torchao (fp8), GPTQModel,
# ninja (GPTQModel's JIT builds), rouge-score and what they import at run time.
# MARLIN=1: nvcc (nvidia-cuda-nvcc, 37 MB) instead of bitsandbytes (43 MB): both do not fit in 64 MiB,
# and GPTQModel builds its Marlin kernel at first use with nvcc; use it for a run with
# METHODS=bf16,gptq-int4,fp8 DEMO_METHODS=gptq-int4,fp8 when the machine has no nvcc of its own.
# Packages published only as sources are built here: pypcre has C code, so it needs a Python 3.12
# (PY312: its command, default python3.12). Run from the repository root.
set -euo pipefail
PY312=${PY312:-python3.12}
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl torchao==0.18.0 ninja threadpoolctl protobuf dill requests urllib3 \
  idna charset-normalizer certifi absl-py nltk regex click joblib \
  "$([ "${MARLIN:-0}" = 1 ] && echo 'nvidia-cuda-nvcc==13.0.*' || echo bitsandbytes==0.50.2)"
$PY312 -m pip wheel -q --no-deps -w .whl pypcre device-smi tokenicer logbar defuser rouge-score
python3 -m pip wheel -q --no-deps -w .whl gptqmodel==7.7.0   # pure Python: its kernels compile on first use
du -sh .whl
[ "$(du -sm .whl | cut -f1)" -le 64 ] || { echo "error: .whl is over the 64 MiB a device run carries; remove some wheels" >&2; exit 1; }
