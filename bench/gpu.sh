#!/usr/bin/env bash
# The GPU path, proven in one run on a machine with one NVIDIA GPU and this repository:
#   1. full fine-tune of the clothing train/ (bf16 autocast, channels-last): training images/s ÷ a raw
#      forward+backward+step of the same model and batch (target ≥ 0.8), validation/ accuracy (target ≥ 0.93);
#   2. label errors: 5 % of train/ labels flipped, a full fine-tune on them, precision at k of the bundle's
#      out-of-fold ranking on the fine-tuned features;
#   3. the agent's throughput (decode-free: preprocess + ONNX Runtime CUDA provider) ÷ raw session.run.
# Every figure is printed at the end (and written to var/gpu-run/summary.json). Bounded by GPU_SH_LIMIT seconds.
#
#   bash bench/gpu.sh --prepare   # here, before: copy the shared clothing set into var/gpu-data (ignored;
#                                 # carry it with the working tree to the GPU machine)
#   bash bench/gpu.sh             # on the GPU machine
#   bash bench/gpu.sh --dry-run   # end to end on CPU: lite0 at 64 px, 4 images per class of tests/data, 1 epoch
#   bash bench/gpu.sh --from=2    # resume at step 2 (or 3) after a failure, reusing the earlier outputs
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
MODE=gpu
FROM=1
for arg in "$@"; do
  case "$arg" in
    --dry-run) MODE=dry ;;
    --prepare) MODE=prepare ;;
    --from=[123]) FROM=${arg#--from=} ;;  # resume at step N, reusing the earlier steps' outputs
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $arg (use --dry-run, --prepare, --from=2|3)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=var/gpu-run
[[ "$MODE" == dry ]] && OUT=var/gpu-dry-run

if [[ "$MODE" == prepare ]]; then
  SRC=${CAMFLEET_TEST_DATA:-$REPO/../shared/data}/clothing
  [[ -d "$SRC/train" ]] || { echo "gpu.sh: $SRC/train not found (set CAMFLEET_TEST_DATA)" >&2; exit 2; }
  rm -rf var/gpu-data && mkdir -p var/gpu-data/clothing
  cp -rL "$SRC/train" "$SRC/validation" var/gpu-data/clothing/
  echo "copied $(find var/gpu-data -type f | wc -l) files into var/gpu-data (carry var/gpu-data to the GPU machine)"
  exit 0
fi

# --- what it needs: the repository's packages (editable), onnxruntime-gpu where a GPU is and ORT lacks CUDA ---
if ! "$PY" -c "import camfleet_trainer, camfleet_contract" 2>/dev/null; then
  echo "installing the camfleet packages into $PY"
  "$PY" -m pip install -q -e contract -e trainer
fi
if [[ "$MODE" == gpu ]]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "gpu.sh: torch sees no CUDA GPU (use --dry-run on a CPU machine)" >&2; exit 2; }
  if ! "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    echo "onnxruntime has no CUDA provider: trying onnxruntime-gpu (the ORT figure is skipped if this fails)"
    "$PY" -m pip install -q onnxruntime-gpu || true
  fi
  DATA_ROOT=var/gpu-data; DEVICE=cuda; PER_CLASS=0; EPOCHS=${GPU_SH_EPOCHS:-8}; SIZE_ARGS=(); BATCH_ARGS=()
  RAW_STEPS=10; LIMIT=${GPU_SH_LIMIT:-480}
  [[ -d "$DATA_ROOT/clothing/train" ]] || { echo "gpu.sh: $DATA_ROOT missing: run --prepare first" >&2; exit 2; }
else
  DATA_ROOT=tests/data; DEVICE=cpu; PER_CLASS=4; EPOCHS=1; SIZE_ARGS=(--image-size 64); BATCH_ARGS=(--batch-size 4)
  RAW_STEPS=1; LIMIT=${GPU_SH_LIMIT:-1200}
fi
if (( FROM == 1 )); then rm -rf "$OUT"; fi
mkdir -p "$OUT"
export CAMFLEET_TEST_DATA="$REPO/$DATA_ROOT" PYTHONUNBUFFERED=1
START=$(date +%s)
left() { echo $((LIMIT - ($(date +%s) - START))); }

if (( FROM <= 1 )); then
echo "== 1/3 full fine-tune ($DEVICE) =="
timeout "$(left)" "$PY" bench/train_full.py --device "$DEVICE" --per-class "$PER_CLASS" --epochs "$EPOCHS" \
  "${SIZE_ARGS[@]}" "${BATCH_ARGS[@]}" --raw-steps "$RAW_STEPS" --json "$OUT/full.json" | tee "$OUT/full.log"
fi

if (( FROM <= 2 )); then
echo "== 2/3 label errors from fine-tuned features ($DEVICE) =="
# A script file, not stdin: full mode's DataLoader workers re-import the main module.
cat > "$OUT/label_errors.py" <<'PYEOF'
import json, sys, tempfile
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path.cwd() / "bench"))
from label_errors import flipped_copy  # noqa: E402
from train_full import DATA, subset  # noqa: E402
from camfleet_contract.signing import load_or_create_key
from camfleet_trainer.backbone import build_backbone, configure_threads, resolve_device
from camfleet_trainer.data import load_folder
from camfleet_trainer.full import FullOptions
from camfleet_trainer.full_bundle import FullBundleOptions, train_full_bundle
from camfleet_trainer.pipeline import BundleTarget

def main() -> None:
    device, per_class, epochs, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    size = int(sys.argv[5]) if len(sys.argv) > 5 else None
    configure_threads(None)
    original = subset(load_folder(DATA / "train"), per_class)
    with tempfile.TemporaryDirectory(prefix="gpu-flips-") as tmp:
        root, flipped = flipped_copy(original, Path(tmp) / "data", 0.05, 0)
        data = load_folder(root)
        opts = FullOptions(epochs=epochs, **({"image_size": size, "batch_size": 4} if size else {}))
        target = BundleTarget(out / "flips-bundle", load_or_create_key(out / "k.key"), classifier="clothes",
                              overwrite=True, device=resolve_device(device))
        train_full_bundle(data, build_backbone(), target, FullBundleOptions(options=opts, int8=False))
        ranking = json.loads((out / "flips-bundle" / "report.json").read_text())["label_errors"]
        names = [Path(r["name"]).name for r in ranking]
        k = max(1, len(flipped))
        top = names[:k]
        p_at_k = sum(n in flipped for n in top) / k
        print(f"label errors: {len(flipped)} of {len(data.samples)} labels flipped; precision at k={k}: {p_at_k:.3f}")
        (out / "label_errors.json").write_text(json.dumps({"flipped": len(flipped), "k": k, "precision_at_k": p_at_k}))


if __name__ == "__main__":
    main()
PYEOF
timeout "$(left)" "$PY" "$OUT/label_errors.py" "$DEVICE" "$PER_CLASS" "$EPOCHS" "$OUT" "${SIZE_ARGS[@]:1}" | tee "$OUT/label_errors.log"
fi

echo "== 3/3 agent throughput with ONNX Runtime ($DEVICE) =="
timeout "$(left)" "$PY" - "$DEVICE" "$OUT" <<'PYEOF' | tee "$OUT/ort.log"
import json, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, "bench")
from train_full import DATA, WORK  # noqa: E402
from camfleet_contract.images import decode_image, preprocess_batch
from camfleet_contract.runtime import INPUT, OUTPUTS, ClassifierRuntime

device, out = sys.argv[1], Path(sys.argv[2])
providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
rt = ClassifierRuntime(WORK / "bundle", providers=providers)
files = sorted(p for p in (DATA / "validation").rglob("*.jpg"))[:64]
images = [decode_image(p.read_bytes()) for p in files]
batch = 32 if device == "cuda" else 4
rounds = 20 if device == "cuda" else 2
chunks = [images[i : i + batch] for i in range(0, len(images), batch) if len(images[i : i + batch]) == batch]
tensors = [preprocess_batch(c, rt.manifest.preprocessing) for c in chunks]
rt.classify(chunks[0]); rt.session.run(list(OUTPUTS), {INPUT: tensors[0]})  # warm-up (CUDA graphs, allocator)
t = time.perf_counter(); n = 0
for _ in range(rounds):
    for c in chunks: rt.classify(c); n += len(c)
agent = n / (time.perf_counter() - t)
t = time.perf_counter(); n = 0
for _ in range(rounds):
    for x in tensors: rt.session.run(list(OUTPUTS), {INPUT: x}); n += len(x)
raw = n / (time.perf_counter() - t)
res = {"providers": rt.providers, "batch": batch, "agent_images_per_s": round(agent, 1),
       "raw_images_per_s": round(raw, 1), "ratio": round(agent / raw, 3)}
print(f"ORT {rt.providers[0]}: agent {agent:.1f} images/s / raw {raw:.1f} images/s = ratio {agent / raw:.2f}")
(out / "ort.json").write_text(json.dumps(res))
PYEOF

echo
echo "== summary ($MODE, $(($(date +%s) - START)) s) =="
"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
f, le, ort = (json.loads((out / n).read_text()) for n in ("full.json", "label_errors.json", "ort.json"))
summary = {"full": f, "label_errors": le, "ort": ort}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(f"device {f['device']}, {f['images']} images, {f['image_size']} px, batch {f['batch_size']}, {f['epochs_run']} epochs")
print(f"training / raw step ratio {f['ratio']:.2f} ({f['train_images_per_s']} / {f['raw_images_per_s']} images/s; target >= 0.8)")
print(f"validation accuracy {f['validation_accuracy']:.4f} on {f['validation_images']} images (target >= 0.93)")
print(f"label errors precision at k {le['precision_at_k']:.3f} (k = {le['k']})")
print(f"agent / raw ORT ratio {ort['ratio']:.2f} ({ort['providers'][0]}, batch {ort['batch']})")
print(f"whole job {f['wall_s']} s")
PYEOF
