#!/usr/bin/env bash
# Every GPU result the project relies on, in one run on a CUDA machine (our lent H100/H200).
#   bash bench/gpu_suite.sh OUTDIR
# Needs python3 with torch (CUDA), cuda-python, pytest, opencv; the reference-executor parts also need a
# TensorRT module for *building networks* (TensorRT-RTX's bindings work even where it cannot run engines).
# Writes a few logs into OUTDIR; bench/results/gpu_*.md quotes them.
set -uo pipefail
out=${1:?usage: bench/gpu_suite.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 YOLO_OFFLINE=1 YOLO_CONFIG_DIR=${TMPDIR:-/tmp}/yolo-cfg
py=${PYTHON:-python3}
status=0
run() {  # run NAME CMD...: log to $out/NAME.log, remember failures
  local name=$1; shift
  echo "== $name: $*" | tee -a "$out/summary.log"
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 3 "$out/$name.log" | sed 's/^/   /' | tee -a "$out/summary.log"
  echo "   rc=$rc" | tee -a "$out/summary.log"
  [ $rc -eq 0 ] || status=1
}

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; $py --version;
  $py -c "import torch; print('torch', torch.__version__, torch.version.cuda)"; } | tee "$out/summary.log"
$py -m trtx doctor >>"$out/summary.log" 2>&1

# kernels under compute-sanitizer: plugins (yolo_decode, nms, swish), retinaface_decode, letterbox
run kernels_memcheck compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 99 \
  $py -m pytest -q -p no:cacheprovider -m gpu tests/plugins/test_plugins_gpu.py tests/test_retinaface_gpu.py \
  tests/test_letterbox.py
# reference executor conformance suite on CUDA, YOLOv5 GPU pipeline, runtime plumbing
run reference_cuda $py -m pytest -q -p no:cacheprovider -m gpu tests/reference
run pipelines_gpu $py -m pytest -q -p no:cacheprovider -m gpu tests/test_yolov5_gpu.py tests/test_runtime.py
# benchmarks (ratios against baselines measured in the same run)
run benches sh -c "$py bench/letterbox_bench.py --out $out/letterbox.md; a=\$?; $py bench/plugins_bench.py --out $out/plugins.md; b=\$?; $py bench/yolov5_bench.py --device cuda --out $out/yolov5.md; c=\$?; exit \$((a|b|c))"
# the reference executor's compiled plan (CUDA graphs) against PyTorch eager, yolov5s and resnet50, batch 1 and 16
run reference_bench $py bench/reference_bench.py --device cuda --batch 1 16 --iters 50 --out $out/reference.md
exit $status
