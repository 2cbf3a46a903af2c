#!/usr/bin/env bash
# The measurements behind docs/performance.md, in the order they were run.
# Each command prints a table and writes JSON under benchmarks/results/.
# Timings on a shared CPU are noisy: contenders are interleaved in rounds and compared as
# ratios of medians taken in the same rounds (see src/shc/bench/timing.py).
set -euo pipefail
cd "$(dirname "$0")/.."
SHC=${SHC:-.venv/bin/shc}
OUT=benchmarks/results
mkdir -p "$OUT"

# 1. the headline layer configuration of the targets (n=4, C=512, 2048 tokens, fp32)
$SHC bench layer --streams 4 --dims 512 --dtypes fp32 --modes eager,compiled --repeats 15 --recompute \
    --json $OUT/layer_headline.json

# 2. end-to-end training step (bf16 autocast, batch 4 x the preset's max_seq_len), every kind vs residual
$SHC bench step --presets tiny,small --repeats 5 --json $OUT/step.json

# 3. decode tokens/s (KV cache, batch 1, greedy, 64 new tokens), tiny preset
$SHC bench decode --presets tiny --repeats 5 --json $OUT/decode.json

# 4. the layer grid, eager (every kind, n in {2,4,8}, C in {256,1024}, fp32 and bf16)
$SHC bench layer --streams 2,4,8 --dims 256,1024 --dtypes fp32,bf16 --modes eager --repeats 7 \
    --json $OUT/layer_grid_eager.json

# 5. the layer grid, compiled (n=4 only: every compile costs tens of seconds on 2 shared cores)
$SHC bench layer --streams 4 --dims 256,1024 --dtypes fp32,bf16 --modes compiled --repeats 7 \
    --json $OUT/layer_grid_compiled.json

.venv/bin/python benchmarks/summarize.py $OUT
