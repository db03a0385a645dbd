#!/usr/bin/env bash
# The course on a CUDA GPU, measured in one command: its tests, training speed, Fashion-MNIST accuracy, the notebooks.
#
#     bash bench/gpu_check.sh OUT [PHASE ...]      # from the repo root; default: every phase, in this order
#     BUDGET=520 bash bench/gpu_check.sh OUT tests speed scratch transfer    # e.g. a first call on a short lease
#
# The phases, with guesses of their minutes on an H100-class GPU (nothing here has been timed on one yet):
#   tests      the CUDA runs of the tests (`pytest -m cuda`: fast path, optimize, export -> CPU)     ~1
#   speed      bench/epoch_speed.py: fast path vs course loop, resnet18 at 224 px, batches 64 and 256  ~2
#   scratch    bench/fashion_mnist.py, MyModel from scratch (target 95.0%)                           ~3
#   transfer   bench/fashion_mnist.py, EfficientNet-Lite0 fine-tuned at 128 px (target 95.0%)        ~2
#   quick      the three notebooks on a small synthetic landmark set (make report QUICK=1): on a GPU
#              they train through the fast path (src/gpu_data.py), as students' landmark runs do    ~1
#   notebooks  both training notebooks on Fashion-MNIST (EPOCHS), then their files tested on the CPU ~4
#   suite      the whole test suite                                                                  ~4
# For a machine without network whose python3 has torch, torchvision, pytest and the like (not this project's pins):
# bench/gpu_carry.sh first fills .gpu/ here (wheels, Fashion-MNIST), which must travel with the tree.
# Each phase runs under its own time limit (LIMIT_*, seconds), cut to what is left of BUDGET (seconds for the whole
# command, if set: a phase that would get under 30 s is skipped), so the command ends in time with its summary.
# A phase's output goes to OUT/log.txt, a line per phase to OUT/summary.txt (printed last). The notebooks' exported
# files are copied to OUT, to load them elsewhere too.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bash bench/gpu_check.sh OUT [tests speed scratch transfer quick notebooks suite]}
shift
PHASES=${*:-tests speed scratch transfer quick notebooks suite}
# The settings, each overridable from the environment (a smoke run on a CPU takes tiny ones)
SPEED_IMAGES=${SPEED_IMAGES:-10000}        # 8,000 training photos: an epoch of seconds even at 10,000 img/s
SPEED_PROFILE=${SPEED_PROFILE:-30}         # fast-path steps profiled after the timed epochs
SCRATCH_EPOCHS=${SCRATCH_EPOCHS:-40}       # 10 gave 92.7% on a CPU (README); the target's source: 30 for a 0.5M ResNet
TRANSFER_EPOCHS=${TRANSFER_EPOCHS:-8}      # the target's source: EfficientNet-Lite0 at 128 px, 95.1% in 8 epochs
TRANSFER_SIZE=${TRANSFER_SIZE:-128}        # px: Fashion-MNIST's 28 px upsampled; 64 px gave 91.5% in 7 epochs here
NOTEBOOK_EPOCHS=${NOTEBOOK_EPOCHS:-2}      # LANDMARK_EPOCHS: every training in the notebooks, capped
LIMIT_TESTS=${LIMIT_TESTS:-240} LIMIT_SPEED=${LIMIT_SPEED:-240} LIMIT_SCRATCH=${LIMIT_SCRATCH:-360}
LIMIT_TRANSFER=${LIMIT_TRANSFER:-300} LIMIT_QUICK=${LIMIT_QUICK:-240} LIMIT_NOTEBOOKS=${LIMIT_NOTEBOOKS:-420}
LIMIT_SUITE=${LIMIT_SUITE:-420}
BUDGET=${BUDGET:-0}                        # seconds for the whole command; 0: no limit but the phases' own

mkdir -p "$OUT"
LOG=$OUT/log.txt SUMMARY=$OUT/summary.txt
say() { echo "$*" | tee -a "$SUMMARY"; }

# The carried wheels go first on the path (never the machine's torch: gpu_carry.sh leaves those out); nbconvert's
# templates and ipykernel's kernel spec are found through JUPYTER_PATH
if [ -d .gpu/wheels ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpu/wheels/*.whl >>"$LOG" 2>&1 || { say "setup: the carried wheels did not install (see log.txt)"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} JUPYTER_PATH=/tmp/site/share/jupyter
fi
if [ -d .gpu/fashion ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
    mkdir -p fashion_mnist/FashionMNIST/raw  # where src/fashion_mnist.py looks first
    for f in .gpu/fashion/*.gz; do gunzip -c "$f" >"fashion_mnist/FashionMNIST/raw/$(basename "$f" .gz)"; done
fi
export PYTHONUNBUFFERED=1
say "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo no GPU)," \
    "$(nproc) cores; $(python3 -c 'import sys, torch, torchvision; print(f"Python {sys.version.split()[0]}, torch \
{torch.__version__}, torchvision {torchvision.__version__}, CUDA {torch.cuda.is_available()}")' 2>&1 | tail -1)"

PHASE_LOG=$(mktemp)  # this run's own: the suite runs a copy of this script too
trap 'rm -f "$PHASE_LOG"' EXIT
phase() {  # phase NAME LIMIT COMMAND...: run it under its limit (Ctrl-C first), log it, and say how it ended
    local name=$1 limit=$2 start=$SECONDS rc how=passed
    shift 2
    if [ "$BUDGET" -gt 0 ]; then
        local left=$((BUDGET - SECONDS - 20))  # 20 s: the summary, and a killed phase's clean-up
        [ $left -lt 30 ] && { : >"$PHASE_LOG"; say "$name: skipped, ${left} s left of BUDGET"; return; }
        [ $left -lt "$limit" ] && limit=$left
    fi
    echo -e "\n===== $name: $* (limit ${limit} s)" >>"$LOG"
    timeout --signal=INT --kill-after=10 "$limit" "$@" >"$PHASE_LOG" 2>&1
    rc=$?
    cat "$PHASE_LOG" >>"$LOG"
    [ $rc -ne 0 ] && how="FAILED (exit $rc)"
    [ $rc -eq 124 ] && how="STOPPED at its ${limit} s limit"
    say "$name: $how in $((SECONDS - start)) s"
}
figures() { grep -E "$1" "$PHASE_LOG" | tail -n "${2:-6}" | sed 's/^/    /' | tee -a "$SUMMARY"; }

for name in $PHASES; do
    case $name in
    tests)
        phase tests "$LIMIT_TESTS" python3 -m pytest -m cuda -q -p no:cacheprovider -o addopts="" -rfEs
        figures "(passed|failed|skipped|errors?)\b.* in [0-9.]+s" 1 ;;
    speed)
        for batch in 64 256; do
            phase "speed (batch $batch)" "$LIMIT_SPEED" python3 bench/epoch_speed.py --images "$SPEED_IMAGES" \
                --batch-size "$batch" --profile "$SPEED_PROFILE"
            figures "course-style loop|fast path:|ratio:|steps of" 4
        done ;;
    scratch)
        phase scratch "$LIMIT_SCRATCH" python3 bench/fashion_mnist.py --model scratch --epochs "$SCRATCH_EPOCHS"
        figures "^epochs|train seconds|test accuracy" 3 ;;
    transfer)
        phase transfer "$LIMIT_TRANSFER" python3 bench/fashion_mnist.py --model efficientnet_lite0 --fine-tune all \
            --image-size "$TRANSFER_SIZE" --epochs "$TRANSFER_EPOCHS"
        figures "^epochs|train seconds|test accuracy" 3 ;;
    quick)
        rm -rf /tmp/gpu_quick && python3 -c "from src.synthetic import make_synthetic_dataset as make
make('/tmp/gpu_quick/data', 4, 16, 4)" >>"$LOG" 2>&1  # the Makefile's QUICK=1 data
        phase quick "$LIMIT_QUICK" env LANDMARK_QUICK=1 LANDMARK_DATASET=landmarks LANDMARK_DATA=/tmp/gpu_quick/data \
            LANDMARK_CHECKPOINTS=/tmp/gpu_quick/checkpoints python3 -m src.report --output-dir /tmp/gpu_quick/reports \
            cnn_from_scratch.ipynb transfer_learning.ipynb app.ipynb
        figures "ipynb +[0-9.]+ min" 3 ;;
    notebooks)
        export LANDMARK_DATASET=fashion-mnist LANDMARK_EPOCHS=$NOTEBOOK_EPOCHS
        phase notebooks "$LIMIT_NOTEBOOKS" python3 -m src.report --output-dir /tmp/gpu_reports \
            cnn_from_scratch.ipynb transfer_learning.ipynb
        figures "ipynb +[0-9.]+ min" 2
        # the exported files, on the CPU: the test split through each file, and copies to take away
        phase "exported files on the CPU" 300 env CUDA_VISIBLE_DEVICES= python3 -m src.predictor --dataset fashion-mnist
        figures ": test accuracy" 2
        cp checkpoints/*_exported_fashion-mnist.pt "$OUT/" 2>/dev/null
        unset LANDMARK_DATASET LANDMARK_EPOCHS ;;
    suite)
        phase suite "$LIMIT_SUITE" python3 -m pytest -q -p no:cacheprovider -o addopts="" -rfE
        figures "(passed|failed|skipped|errors?)\b.* in [0-9.]+s" 1 ;;
    *) say "unknown phase $name (tests speed scratch transfer quick notebooks suite)" ;;
    esac
done
echo -e "\n===== summary"
cat "$SUMMARY"
