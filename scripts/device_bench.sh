#!/usr/bin/env bash
# Run `lalmbench bench` on a lent GPU machine, within 8 minutes. Prepare with
# scripts/fetch_device_wheels.sh, then call the device tool with carry [".whl"] and the command
#   bash scripts/device_bench.sh
# Figures go to $OUT/bench.json (rewritten after every path, so a run cut short keeps its figures)
# and $OUT/bench.log (or ./device_out without $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-device_out}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$out/gpu.txt"
timeout 460 python3 -m lalmbench bench --device cuda --compile --output "$out/bench.json" 2>&1 | tee "$out/bench.log"
