#!/usr/bin/env bash
# Download, on a networked machine, the wheels lalmbench needs on a GPU machine that cannot reach a
# package index and already has torch, transformers, peft, tqdm, pyyaml and scikit-learn (Python 3.12,
# x86-64). They land in .whl/ (ignored by git); scripts/device_bench.sh installs them there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for requirement in webdataset braceexpand soundfile soxr jiwer rapidfuzz cffi pycparser; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$requirement"
done
ls -1 .whl
