#!/usr/bin/env bash
# paft-rl's GPU check, in one call of at most 8 minutes on a machine with one CUDA GPU and no network, where torch,
# transformers, peft and accelerate are installed and everything else paft-rl needs travels as wheels.
#
#   bench/gpu_check.sh --prepare DIR    # here, with pip and `make model` done: fill DIR (under 64 MiB) with the
#                                       # wheels (CPython 3.12, manylinux x86-64) and SmolLM2-135M's config and
#                                       # tokenizer (its weights, 270 MB in bf16, do not fit: random ones are made)
#   bench/gpu_check.sh DIR              # there: install DIR's wheels into a scratch folder, then run
#                                       # bench/gpu_check.py (GRPO same / mixed / plain TRL, SFT under ZeRO-2)
#   bench/gpu_check.sh --cpu            # (or --quick) the smoke run on a CPU, in the current environment (tiny model)
#
# DIR is what the device tool carries (`carry: [DIR]`, with DIR ignored by git). Output: the lines of
# bench/gpu_check.py, the step-time ratios and peak memory, and the SFT ZeRO-2 line.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
LIMIT_S="${GPU_CHECK_LIMIT_S:-470}"  # stop before the call's 8 minutes, with time to print what was measured

# The packages paft-rl imports that the GPU image lacks (its torch, transformers, peft, accelerate, pyarrow,
# pandas, xxhash, aiohttp... are used as they are), at the versions of the environment that prepares them.
WHEELS=(trl datasets dill multiprocess math-verify latex2sympy2_extended antlr4-python3-runtime hjson pydantic
        pydantic_core annotated-types typing-inspection)

prepare() {
    local dir="$1"
    mkdir -p "$dir/wheels" "$dir/smollm2"
    local name version
    for name in "${WHEELS[@]}"; do
        version="$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")"
        "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$dir/wheels" "$name==$version"
    done
    # DeepSpeed publishes no wheel: build a pure-Python one without its CUDA ops (ZeRO-2 with torch's AdamW needs
    # none of them).
    version="$("$PYTHON" -c "import importlib.metadata as m; print(m.version('deepspeed'))")"
    DS_BUILD_OPS=0 "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$dir/wheels" "deepspeed==$version"
    local model
    model="$("$PYTHON" -c "from paft_rl.smollm import smollm2_dir; print(smollm2_dir())")"
    cp "$model"/config.json "$model"/tokenizer.json "$model"/tokenizer_config.json "$dir/smollm2/"
    cp "$model"/chat_template.jinja "$model"/generation_config.json "$dir/smollm2/" 2>/dev/null || true
    du -sh "$dir"
    local bytes
    bytes="$(du -sb "$dir" | cut -f1)"
    if (( bytes > 64 * 1024 * 1024 )); then
        echo "gpu_check: $dir holds $bytes bytes, more than the 64 MiB a call carries" >&2
        exit 1
    fi
}

case "${1:-}" in
    --prepare)
        prepare "${2:?usage: bench/gpu_check.sh --prepare DIR}"
        ;;
    --cpu|--quick)
        OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" exec timeout "$LIMIT_S" "$PYTHON" "$HERE/gpu_check.py" --cpu
        ;;
    ""|-h|--help)
        sed -n '2,14p' "$0"
        ;;
    *)
        dir="$1"
        site="$(mktemp -d -t paft-gpu-site.XXXXXX)"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$dir"/wheels/*.whl
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        export PYTHONUNBUFFERED=1
        exec timeout "$LIMIT_S" "$PYTHON" "$HERE/gpu_check.py" --model "${2:-$dir/smollm2}"
        ;;
esac
