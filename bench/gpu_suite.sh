#!/usr/bin/env bash
# Every GPU result the project relies on, on a CUDA machine (our lent H100/H200), in two parts that each fit
# one 10-minute device call:
#   bash bench/gpu_suite.sh OUTDIR tests     # every `gpu` test, plugins under compute-sanitizer, AOT report
#   bash bench/gpu_suite.sh OUTDIR benches   # reference plan vs eager, ultralytics post-processing, trained pipelines
#   bash bench/gpu_suite.sh OUTDIR           # both
# Needs python3 with torch (CUDA), cuda-python, pytest, opencv; building networks (the reference executor's
# input) also needs a TensorRT module: TensorRT-RTX's bindings build networks where they cannot run engines.
# Writes logs and markdown tables into OUTDIR; bench/results/*_h200*.md quote them.
set -uo pipefail
out=${1:?usage: bench/gpu_suite.sh OUTDIR [tests|benches|all]}
part=${2:-all}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 YOLO_OFFLINE=1 YOLO_CONFIG_DIR=${TMPDIR:-/tmp}/yolo-cfg
py=${PYTHON:-python3}
limit=${SUITE_STEP_LIMIT:-420}  # seconds one step may take: a hung step fails alone
status=0
run() {  # run NAME CMD...: log to $out/NAME.log, remember failures
  local name=$1; shift
  echo "== $name: $*" | tee -a "$out/summary.log"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 3 "$out/$name.log" | sed 's/^/   /' | tee -a "$out/summary.log"
  echo "   rc=$rc ($((SECONDS - t0)) s)" | tee -a "$out/summary.log"
  [ $rc -eq 0 ] || status=1
}

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; $py --version;
  $py -c "import torch; print('torch', torch.__version__, torch.version.cuda)"; } | tee -a "$out/summary.log"
$py -m trtx doctor >>"$out/summary.log" 2>&1

if [ "$part" = tests ] || [ "$part" = all ]; then
  # every gpu test: plugin kernels (poisoned outputs, batch 1/3/8, fp32/fp16, AOT launch contracts), the
  # reference executor's conformance suite through the compiled plan on CUDA, pipelines, runtime plumbing
  run gpu_tests env TRTX_PLUGIN_REPORT="$out/aot_report.json" $py -m pytest -q -p no:cacheprovider -m gpu tests
  # kernels under compute-sanitizer: every plugin's AOT launches, retinaface decode, letterbox
  run memcheck compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 99 \
    $py -m pytest -q -p no:cacheprovider -m gpu tests/plugins tests/test_retinaface_gpu.py tests/test_letterbox.py -k aot
  # racecheck is slow: the batch-3 launches (several images per grid) and the shared-memory overflow case
  run racecheck compute-sanitizer --tool racecheck --error-exitcode 99 \
    $py -m pytest -q -p no:cacheprovider -m gpu tests/plugins \
    -k "aot-3 and (nms or decode) or aot-clustered-3 or aot-ties-3 or shared_memory and aot"
fi
if [ "$part" = benches ] || [ "$part" = all ]; then
  # the reference executor's compiled plan (CUDA graphs) against PyTorch eager, yolov5s and resnet50, batch 1 and 16
  run reference_bench $py bench/reference_bench.py --device cuda --batch 1 16 --iters 50 --out "$out/reference.md"
  # where yolov5s batch 16's kernel time goes, eager and plan
  run reference_profile $py bench/reference_profile.py --model yolov5s --batch 16
  # YOLOv8/11 decode + NMS (plugins) against ultralytics' torch post-processing, batch 1 and 8
  run ultralytics_bench $py bench/ultralytics_bench.py --batch 1 8 --out "$out/ultralytics.md"
  # YOLO26's top-k against YOLO11's NMS on the same batch
  run ultralytics_e2e_bench $py bench/ultralytics_e2e_bench.py --batch 1 8 --out "$out/ultralytics_e2e.md"
  # MTCNN and OCR: reference executor on the GPU against the PyTorch pipelines (needs facenet-pytorch, easyocr)
  run trained_pipelines $py bench/trained_pipelines_bench.py --device cuda --iters 5 --pipelines ${PIPELINES:-mtcnn ocr} --out "$out/trained_pipelines.md"
fi
exit $status
