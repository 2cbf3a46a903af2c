#!/usr/bin/env bash
# The measurements behind docs/performance.md, in the order they were run (~30 min on 2 shared cores).
# Each command prints a table and writes JSON under benchmarks/results/ (the machine, torch threads
# and the load average are in every JSON). Timings on a shared CPU are noisy: contenders are
# interleaved in rounds and compared as ratios of medians taken in the same rounds
# (src/hyperconn/bench/timing.py); `uptime` is printed before each command.
set -euo pipefail
cd "$(dirname "$0")/.."
SHC=${SHC:-.venv/bin/hyperconn}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
# glibc settings that keep freed 16-64 MiB blocks in the heap instead of returning them to the
# kernel (which then zero-fills fresh pages for the next temporary): see docs/performance.md
TUNED_MALLOC="MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=4294967296"

# 1. per-connection decode call (one token, no grad): microseconds and ATen ops, every kind
uptime; $SHC bench call --repeats 15 --json $OUT/call.json

# 2. decode tokens/s (KV cache, batch 1, greedy, 64 new tokens, fp32), tiny preset
uptime; $SHC bench decode --presets tiny --repeats 21 --json $OUT/decode.json

# 3. the headline layer configuration (n=4, C=512, 2048 tokens, fwd+bwd), fp32 and bf16 streams,
#    eager and compiled, with the naive math, the hyper-connections package and the compiled floor
uptime; $SHC bench layer --num-streams 4 --dims 512 --dtypes fp32,bf16 --modes eager,compiled --repeats 7 --recompute \
    --json $OUT/layer_headline.json

# 4. the same, eager, with the tuned glibc allocator (every contender in the same process)
uptime; env $TUNED_MALLOC $SHC bench layer --num-streams 4 --dims 512 --dtypes fp32,bf16 --modes eager \
    --repeats 7 --json $OUT/layer_headline_tuned_malloc.json

# 5. growth with n: sHC vs KromHC (and HC) at n = 8, eager and compiled
uptime; $SHC bench layer --num-streams 8 --dims 512 --dtypes fp32 --modes eager,compiled --kinds hc,kromhc,shc \
    --no-naive --no-package --repeats 7 --json $OUT/layer_n8.json

# 6. the n x C grid for the plot: every kind, eager fp32, 1024 tokens, compiled floor
uptime; $SHC bench layer --num-streams 2,3,4,6,8 --dims 256,512,1024,2048 --dtypes fp32 --modes eager \
    --tokens 1024 --no-naive --no-package --repeats 5 --json $OUT/layer_grid.json
$SHC bench plot $OUT/layer_grid.json --out docs/img/layer_grid.png

# 7. end-to-end training step (bf16 autocast as the trainer, batch 4 x max_seq_len), every kind vs residual
uptime; $SHC bench step --presets tiny,small --repeats 7 --json $OUT/step.json

uptime
.venv/bin/python benchmarks/summarize.py $OUT
