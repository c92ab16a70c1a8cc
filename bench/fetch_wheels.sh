#!/usr/bin/env bash
# Wheels that the GPU machine (Python 3.12, x86-64, torch + transformers only) lacks, into .whl/
# (kept out of git; at most 64 MiB travel with a device run): bitsandbytes, GPTQModel, rouge-score and
# what they import at run time. Packages published only as sources are built here: pypcre has C code,
# so it needs a Python 3.12 (PY312: its command, default python3.12). Run from the repository root.
set -euo pipefail
PY312=${PY312:-python3.12}
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl bitsandbytes==0.50.2 threadpoolctl protobuf dill requests urllib3 \
  idna charset-normalizer certifi absl-py nltk regex click joblib
$PY312 -m pip wheel -q --no-deps -w .whl pypcre device-smi tokenicer logbar defuser rouge-score
python3 -m pip wheel -q --no-deps -w .whl gptqmodel==7.7.0   # pure Python: its kernels compile on first use
du -sh .whl
