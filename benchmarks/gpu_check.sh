#!/usr/bin/env bash
# The one prepared check for a machine with a CUDA GPU (issue 18): about 8 minutes on one H100/H200.
#
#   OUT=/some/folder PY=.venv/bin/python bash benchmarks/gpu_check.sh
#
# Writes to $OUT (default gpu_check_out/): machine.txt, matmul_peak.md (the GPU's measured float32 / TF32 / bf16
# matmul peak), bench_train.md (stacked vs sequential vs SAELens on CUDA, tokens/s, share of the bare matmul),
# fast_paths.md (tokens/s of each TrainConfig fast path and its largest weight difference to the plain path),
# smoke_grid.txt (the smoke grid on CUDA, serial, then again with --ray when Ray is installed) and summary.md
# (what ran, what failed). Artifacts go to a temporary folder, not to $OUT. Every step has its own timeout and a
# failing step does not stop the others. Paste the tables into benchmarks/README.md.
set -uo pipefail
OUT=${OUT:-gpu_check_out}
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
ART=$(mktemp -d)
SUMMARY="$OUT/summary.md"
: > "$SUMMARY"

step() {  # step NAME SECONDS OUTFILE CMD...: run with a timeout, record its exit status
    local name=$1 secs=$2 out=$3
    shift 3
    local t0=$SECONDS
    timeout "$secs" "$@" > "$out" 2>&1
    local rc=$?
    echo "- $name: exit $rc, $((SECONDS - t0)) s ($out)" | tee -a "$SUMMARY"
}

{ nvidia-smi; "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; } \
    > "$OUT/machine.txt" 2>&1

step "matmul peak" 60 "$OUT/matmul_peak.md" "$PY" - <<'EOF'
import time, torch
n = 8192
print("| dtype | TFLOP/s (measured, n = 8192) |\n|---|---|")
for name, dtype, tf32 in (("float32", torch.float32, False), ("tf32", torch.float32, True), ("bf16", torch.bfloat16, False)):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    print(f"| {name} | {20 * 2 * n**3 / (time.perf_counter() - t0) / 1e12:.1f} |")
torch.backends.cuda.matmul.allow_tf32 = False
EOF

step "training benchmark (stacked vs sequential vs SAELens)" 240 "$OUT/bench_train.md" \
    "$PY" benchmarks/bench_train.py --device cuda --d-in 768 --sizes 4096 16384 --seeds 1 8 --steps 20

step "fast paths" 180 "$OUT/fast_paths.md" "$PY" - <<'EOF'
import dataclasses, time, torch
from saelib.config import SAEConfig, TrainConfig
from saelib.train import train_saes

x = torch.randn(4096 * 41, 768)
print("| variant | fast path | tokens*seeds/s | vs plain | max abs weight diff |\n|---|---|---|---|---|")
for variant in ("topk", "relu"):
    cfg = SAEConfig(d_in=768, d_sae=16384, variant=variant, k=64, n_seeds=8)
    base = TrainConfig(n_tokens=4096 * 40, batch_size=4096, lr=2e-4, device="cuda", log_every=10**9)
    runs = {"plain": {}, "tf32": {"tf32": True}, "bf16 autocast": {"autocast_bf16": True},
            "prefetch": {"prefetch": True}, "torch.compile": {"torch_compile": True}, "all": {
                "tf32": True, "autocast_bf16": True, "prefetch": True, "torch_compile": True}}
    ref, ref_rate = None, None
    for name, opts in runs.items():
        tc = dataclasses.replace(base, **opts)
        train_saes(cfg, dataclasses.replace(tc, n_tokens=4096 * 2), x, progress=False)  # warm-up (and compile)
        torch.cuda.synchronize(); t0 = time.perf_counter()
        sae = train_saes(cfg, tc, x, progress=False).sae
        torch.cuda.synchronize()
        rate = tc.n_tokens * cfg.n_seeds / (time.perf_counter() - t0)
        ref = sae.W_dec.detach() if ref is None else ref
        ref_rate = ref_rate or rate
        diff = (sae.W_dec.detach() - ref).abs().max().item()
        print(f"| {variant} | {name} | {rate:,.0f} | {rate / ref_rate:.2f} | {diff:.2e} |", flush=True)
EOF

step "smoke grid on CUDA (serial)" 240 "$OUT/smoke_grid.txt" \
    env SAELIB_ARTIFACTS="$ART/serial" "$PY" -m saelib grid --scale smoke --device cuda
if "$PY" -c "import ray" 2>/dev/null; then
    step "smoke grid on CUDA (--ray, local)" 240 "$OUT/smoke_grid_ray.txt" \
        env SAELIB_ARTIFACTS="$ART/ray" "$PY" -m saelib grid --scale smoke --device cuda --ray
else
    echo "- smoke grid with --ray: skipped (ray not installed: pip install -e '.[cluster]')" | tee -a "$SUMMARY"
fi
rm -rf "$ART"
