#!/usr/bin/env bash
# GPU benchmark of llm2vec-hf against the official llm2vec 0.2.3, in one command, within a time budget.
#
#   bash benchmarks/gpu.sh fetch     # once, where pip reaches PyPI: the official env's wheels (cp312, x86-64)
#                                    #   into benchmarks/.wheels-gpu/official (~14 MB; git-ignored)
#   bash benchmarks/gpu.sh           # on the GPU machine (H100/H200): ~8 minutes, no network needed
#
# What it does, in order (benchmarks/gpu_bench.py is the worker):
#   1. two environments, as prefixes on PYTHONPATH over the machine's python (which holds the CUDA torch):
#      - llm2vec-hf: this checkout installed with --no-deps over the machine's transformers 5.x /
#        sentence-transformers 6 (a shim copy of the package if pip cannot build it);
#      - official: llm2vec 0.2.3 + transformers 4.44.2 + tokenizers 0.19.1 + huggingface_hub 0.36.2 +
#        peft 0.21.2, from the carried wheels (or from PyPI when reachable).
#      Not venvs: the machine's python3 is itself a venv holding torch, and a venv made from it would not see it.
#   2. correctness first (llm2vec-hf): attention is bidirectional (changing the last token moves the first
#      token's output, padded and unpadded; a causal control does not move) under eager, sdpa, flex_attention and
#      flash_attention_2 (when flash-attn is installed), and each backend's vectors in fp32 (max rel |Δ| <= 1e-4)
#      and bf16 (min cosine >= 0.995) against eager fp32;
#   3. timings in bf16 of a 1.3B-shaped Llama and a 7B-shaped Mistral (random weights), batch x length sweeps
#      with length 512, for llm2vec-hf and the official library: forward tokens/s and LLM2Vec.encode tokens/s,
#      each as a fraction of the bf16 matmul rate measured in the same process; for llm2vec-hf also the packed
#      path on mixed-length texts (packed rows against one text per row; real tokens/s and that fraction);
#   3a. training (llm2vec-hf), a tenth of the time left: supervised contrastive steps of a 7B-shaped Mistral at
#      the recipes' settings (LoRA r 16, gradient checkpointing, bf16, sdpa, max 512 tokens, E5-like lengths),
#      padding-free (the default) and padded: step time, real tokens/s, MFU, peak memory, first-step losses;
#   3b. the accelerate configs (FSDP, DeepSpeed ZeRO-2/3 when deepspeed is installed) on all GPUs: tiny SimCSE,
#      LoRA + gradient checkpointing + bf16, 10 steps; exit status and losses in the log;
#   3c. export and load rows at the 1.3B shape (benchmarks/scale.py: seconds, peak RSS) when time is left;
#   4. a table on stdout, and in $OUT if set (else benchmarks/results/gpu/): gpu.log, gpu_results.json and one
#      JSON file per step (7 files: what the device tool brings back).
#
# Settings (environment): BUDGET_S (default 480: stops starting new timings ~45 s before), VLLM_PYTHON (a python
# with vllm, for step 2b; default PYTHON), SHAPES
# (default llama-1.3b,mistral-7b), PYTHON (default python3), OFFICIAL_PYTHON (an interpreter that already has
# llm2vec 0.2.3; skips building that env), DRY_RUN=1 (tiny shapes on the CPU: checks the script, no GPU).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="$ROOT/benchmarks/.wheels-gpu"
OFFICIAL_PINS=(llm2vec==0.2.3 transformers==4.44.2 tokenizers==0.19.1 huggingface_hub==0.36.2 peft==0.21.2)
PY="${PYTHON:-python3}"

if [[ "${1:-run}" == "fetch" ]]; then
    mkdir -p "$WHEELS/official"
    # llm2vec 0.2.3 is published as an sdist only: build its (pure-Python) wheel here.
    "$PY" -m pip wheel -q --no-deps -w "$WHEELS/official" llm2vec==0.2.3
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS/official" "${OFFICIAL_PINS[@]:1}"
    ls -l "$WHEELS/official"
    exit 0
fi

START=$(date +%s)
BUDGET_S="${BUDGET_S:-480}"
DEADLINE=$((START + BUDGET_S - 45))
WORK="${OUT:-$ROOT/benchmarks/results/gpu}"
ENVS="$(mktemp -d /tmp/llm2vec-gpu-envs.XXXXXX)"
mkdir -p "$WORK"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec > >(tee "$WORK/gpu.log") 2>&1
WORKER_ARGS=(--work "$WORK" --scratch "$ENVS/scratch")
if [[ "${DRY_RUN:-0}" == "1" ]]; then
    WORKER_ARGS+=(--dry-run --device cpu)
else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
log() { echo "[gpu.sh $(($(date +%s) - START))s] $*"; }

# --- 1. environments --------------------------------------------------------------------------------------------
log "llm2vec-hf environment in $ENVS/hf"
if ! "$PY" -m pip install -q --no-deps --no-build-isolation --no-index --target "$ENVS/hf" "$ROOT" 2>"$ENVS/hf-pip.log"; then
    log "pip could not build the package ($(tail -1 "$ENVS/hf-pip.log")); using a copy of the source tree"
    mkdir -p "$ENVS/hf"
    cp -r "$ROOT/src/llm2vec_hf" "$ENVS/hf/llm2vec_hf"
    rm -rf "$ENVS/hf/llm2vec_hf/modeling"
    cp -r "$ROOT/modeling" "$ENVS/hf/llm2vec_hf/modeling"
fi
HF=(env PYTHONPATH="$ENVS/hf" "$PY")
"${HF[@]}" -c "import llm2vec_hf, transformers, sentence_transformers, torch; print('llm2vec-hf', llm2vec_hf.__version__, \
'transformers', transformers.__version__, 'sentence-transformers', sentence_transformers.__version__, 'torch', torch.__version__)"

OFFICIAL=()
if [[ -n "${OFFICIAL_PYTHON:-}" ]]; then
    OFFICIAL=(env PYTHONPATH= "$OFFICIAL_PYTHON")
else
    log "official environment in $ENVS/official"
    if compgen -G "$WHEELS/official/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-deps --no-index --no-compile --target "$ENVS/official" "$WHEELS"/official/*.whl
    else
        timeout 120 "$PY" -m pip install -q --no-deps --timeout 10 --retries 0 --target "$ENVS/official" \
            "${OFFICIAL_PINS[@]}" || log "no wheels in $WHEELS/official and no PyPI: official timings skipped"
    fi
    OFFICIAL=(env PYTHONPATH="$ENVS/official" "$PY")
fi
if ! "${OFFICIAL[@]}" -c "import llm2vec, transformers; assert transformers.__version__ == '4.44.2', transformers.__version__; \
print('official llm2vec with transformers', transformers.__version__)"; then
    log "the official environment does not import; its timings are skipped"
    OFFICIAL=()
fi

# --- 2. correctness ---------------------------------------------------------------------------------------------
log "prepare + correctness"
"${HF[@]}" "$ROOT/benchmarks/gpu_bench.py" prepare "${WORKER_ARGS[@]}"
CHECK_STATUS=0
timeout 180 "${HF[@]}" "$ROOT/benchmarks/gpu_bench.py" correctness "${WORKER_ARGS[@]}" || CHECK_STATUS=$?
[[ $CHECK_STATUS == 0 ]] || log "correctness step exited with $CHECK_STATUS"

# --- 2b. vLLM (the `vllm` GPU package) with the exact LLM2Vec pooling, on a third of the time left: check + 7B
# tokens/s (benchmarks/gpu_vllm.py). Runs where `import vllm` works in VLLM_PYTHON (default: $PY); the machine
# reaches no registry, so vLLM must already be installed there (its wheels exceed what a run can carry). ----------
VLLM_PY="${VLLM_PYTHON:-$PY}"
if env PYTHONPATH="$ENVS/hf" "$VLLM_PY" -c "import vllm" 2>/dev/null; then
    NOW=$(date +%s)
    VLLM_DEADLINE=$((NOW + (DEADLINE - NOW) / 3))
    log "vLLM until +$((VLLM_DEADLINE - START))s"
    timeout $((VLLM_DEADLINE - NOW + 30)) env PYTHONPATH="$ENVS/hf" "$VLLM_PY" "$ROOT/benchmarks/gpu_vllm.py" \
        --deadline "$VLLM_DEADLINE" "${WORKER_ARGS[@]}" || log "vLLM step exited with $?"
else
    log "vLLM: skipped (no vllm in $VLLM_PY; set VLLM_PYTHON to a python that has it)"
fi

# --- 3a. training rows (llm2vec-hf): a tenth of the time left, at least 100 s ----------------------------------------
NOW=$(date +%s)
TRAIN_DEADLINE=$((NOW + ((DEADLINE - NOW) / 10 > 100 ? (DEADLINE - NOW) / 10 : 100)))
log "training rows until +$((TRAIN_DEADLINE - START))s"
timeout $((TRAIN_DEADLINE - NOW + 60)) "${HF[@]}" "$ROOT/benchmarks/gpu_bench.py" training \
    --deadline "$TRAIN_DEADLINE" "${WORKER_ARGS[@]}" || log "training rows exited with $?"

# --- 3. timings: the time left is split between the two sides -----------------------------------------------------
NOW=$(date +%s)
HALF=$((NOW + (DEADLINE - NOW) / 2))
SHAPES="${SHAPES:-llama-1.3b,mistral-7b}"
log "timing llm2vec-hf until +$((HALF - START))s"
timeout $((HALF - NOW + 60)) "${HF[@]}" "$ROOT/benchmarks/gpu_bench.py" timing --side llm2vec-hf \
    --shapes "$SHAPES" --deadline "$HALF" "${WORKER_ARGS[@]}" || log "llm2vec-hf timing exited with $?"
if ((${#OFFICIAL[@]})); then
    NOW=$(date +%s)
    log "timing official until +$((DEADLINE - START))s"
    timeout $((DEADLINE - NOW + 60)) "${OFFICIAL[@]}" "$ROOT/benchmarks/gpu_bench.py" timing --side official \
        --shapes "$SHAPES" --deadline "$DEADLINE" "${WORKER_ARGS[@]}" || log "official timing exited with $?"
fi

# --- 3b. the accelerate configs on the GPUs: FSDP cannot start on a CPU (tests/training/test_training_ddp.py records the
# error), so here is where it runs. Tiny SimCSE with LoRA + gradient checkpointing + the file's bf16, 10 steps. ----
if [[ "${DRY_RUN:-0}" != "1" ]]; then
    NGPU=$(nvidia-smi -L | wc -l)
    "${HF[@]}" - "$ROOT" "$ENVS/tiny" <<'PY'
import sys, yaml
from llm2vec_hf.training.tiny_data import prepare_tiny
root, folder = sys.argv[1], sys.argv[2]
tiny = prepare_tiny(folder)
recipe = yaml.safe_load(open(f"{root}/src/llm2vec_hf/demo/recipes/simcse.yaml"))
recipe.pop("peft_model_name_or_path")
recipe.update(model_name_or_path=str(tiny["base"]), train_file=str(tiny["corpus"]), use_cpu=False,
              gradient_checkpointing=True, max_steps=10, save_strategy="no", report_to="none", ddp_backend="nccl")
yaml.safe_dump(recipe, open(f"{folder}/simcse.yaml", "w"))
PY
    for config in fsdp deepspeed_zero2 deepspeed_zero3; do
        if [[ $config == deepspeed* ]] && ! "${HF[@]}" -c "import deepspeed" 2>/dev/null; then
            log "accelerate $config: skipped (deepspeed is not installed)"; continue
        fi
        log "accelerate $config on $NGPU GPU(s)"
        ACC_STATUS=0
        timeout 240 "${HF[@]}" -m accelerate.commands.launch --config_file "$ROOT/configs/accelerate/$config.yaml" \
            --num_processes "$NGPU" -m llm2vec_hf.cli train "$ENVS/tiny/simcse.yaml" \
            --output_dir "$WORK/accelerate-$config" >"$WORK/accelerate-$config.log" 2>&1 || ACC_STATUS=$?
        log "accelerate $config exited with $ACC_STATUS; losses: $(grep -o "'loss': '[0-9.]*'" \
            "$WORK/accelerate-$config.log" | tr '\n' ' ')"
    done
fi

# --- 3c. export and load at the 1.3B shape (benchmarks/make_large_checkpoint.py, benchmarks/scale.py): seconds and
# peak RSS of the streamed export and of LLM2Vec.from_pretrained, on this machine's CPUs and disk. -----------------
if (( $(date +%s) + 150 < DEADLINE + 45 )); then
    log "export + load rows (1.3B shape)"
    timeout 300 "${HF[@]}" "$ROOT/benchmarks/make_large_checkpoint.py" --shape sheared-llama-1.3b \
        --output "$ENVS/large/sheared-1.3b" >"$WORK/scale.log" 2>&1 \
      && timeout 300 "${HF[@]}" "$ROOT/benchmarks/scale.py" --model "sheared-1.3b=$ENVS/large/sheared-1.3b" \
        --steps export,load --output "$WORK/scale.json" >>"$WORK/scale.log" 2>&1 || log "export + load rows exited with $?"
    tail -4 "$WORK/scale.log"
else
    log "export + load rows: skipped (budget)"
fi

# --- 4. report ---------------------------------------------------------------------------------------------------
log "report"
STATUS=0
"${HF[@]}" "$ROOT/benchmarks/gpu_bench.py" report "${WORKER_ARGS[@]}" || STATUS=$?
log "done; JSON in $WORK"
rm -rf "$ENVS"
exit $STATUS
