#!/usr/bin/env bash
# The training-step and decode measurements of docs/performance.md's "Speed III" table, one process
# at a time, one torch thread, on a quiet machine (a few minutes). Every step row carries the
# connections' floor beside its time (extra_ms vs floor_ms; hyperconn.bench.floor). JSON under
# $OUT; the machine and the load average are printed before and after each command.
set -euo pipefail
cd "$(dirname "$0")/.."
HC=${HC:-.venv/bin/hyperconn}
OUT=${OUT:-benchmarks/results/speed3}
mkdir -p "$OUT"
lscpu | grep "Model name"
export OMP_NUM_THREADS=1
# bf16 autocast GEMMs are only fast with avx512_bf16 / amx_bf16; without them a bf16 GEMM runs
# tens of times slower than fp32 on CPU and the bf16 rows measure that, not the connections
if ! grep -qE "avx512_bf16|amx_bf16" /proc/cpuinfo; then
    echo "note: this CPU has neither avx512_bf16 nor amx_bf16: bf16 steps are emulated and slow"
fi

# 1. the step, residual vs mhc vs shc, small and tiny, fp32 and bf16 autocast
for precision in fp32 bf16; do
    uptime
    $HC bench step --threads 1 --presets small,tiny --precision "$precision" --kinds residual,mhc,shc \
        --repeats 5 --json "$OUT/step_$precision.json"
done

# 2. every kind at small, fp32
uptime
$HC bench step --threads 1 --presets small --precision fp32 --repeats 5 --json "$OUT/step_all_kinds_small_fp32.json"

# 3. decode: tiny, batch 1, fp32, tokens/s and ATen ops per token
uptime
$HC bench decode --threads 1 --presets tiny --precision fp32 --repeats 15 --json "$OUT/decode_tiny_fp32.json"
uptime
