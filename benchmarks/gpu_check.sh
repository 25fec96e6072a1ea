#!/usr/bin/env bash
# GPU check (issue 11): model throughput eager and compiled with the diffusers baseline, a short
# train.py run (base 64 px and the earlier small 32 px run) with its steps/s, the data stream
# alone (examples/s per loader worker), the step profile (benchmarks/bench_step.py); one table
# last, also written to $OUT/gpu_check.md when OUT is set (with results.jsonl and logs.txt).
#
#   bash benchmarks/gpu_check.sh                       # GPU machine: at most 8 minutes on one H100
#   bash benchmarks/gpu_check.sh --device cpu --tiny   # the same stages at toy size on CPU (~2 min)
#   bash benchmarks/gpu_check.sh --stages env,model_compiled --budget 300   # some stages again
#
# Every stage runs under its own time limit (and the whole under --budget seconds), so a
# hanging stage (torch.compile, say) is killed, reported as TIMEOUT and the next one starts.
#
# Wheels. The GPU machine has torch, accelerate, einops, safetensors, tensorboard, pyarrow,
# h5py, pandas ... but no diffusers, datasets or anndata, and no internet. When `import
# diffusers, datasets, anndata` fails there, this script installs every wheel of the git-ignored
# folder .whl/ into /tmp/site (no index, no dependency resolution) and puts it on PYTHONPATH.
# Fill .whl once, here, from the repository root (the versions of the tested .venv; pandas is
# carried because anndata 0.12 needs pandas < 3; pyarrow >= 24 is assumed present there):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux1_x86_64 -d .whl \
#     diffusers==0.42.1 datasets==5.2.0 anndata==0.12.19 importlib_metadata==10.2.0 \
#     lazy-importer==0.1.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 \
#     array-api-compat==1.16.0 legacy-api-wrap==1.5 natsort==8.4.0 scverse-misc==0.0.3 \
#     session-info2==0.4.1 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 \
#     google-crc32c==1.9.0 pandas==2.3.3 pytz==2026.6 tzdata==2026.6
#
# (about 30 MB). Then, with the device tool: run(command="bash benchmarks/gpu_check.sh",
# carry=[".whl"], timeout_s=540).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DEVICE=cuda
TINY=0
BUDGET=""
STAGES="env,data,model_eager,train_base,stream,model_compiled,train_small,step"
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --stages) STAGES="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cpu|cuda) ;; *) echo "gpu_check.sh: error: --device $DEVICE: cpu or cuda" >&2; exit 2 ;; esac
if [[ -z "$BUDGET" ]]; then
  if ((TINY)); then BUDGET=300; else BUDGET=470; fi
fi

if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi
WORK="${GPU_CHECK_WORK:-/tmp/vg_gpu_check}"
MODE=$([[ $TINY == 1 ]] && echo tiny || echo full)
DATA="$WORK/data_$MODE"
LOGS="$WORK/logs"
RES="$WORK/results.jsonl"
STAT="$WORK/stages.tsv"
DEST="${OUT:-$WORK/out}"
rm -rf "$LOGS" "$RES" "$STAT" "$WORK"/train_* "$DEST"/gpu_check.md "$DEST"/results.jsonl "$DEST"/logs.txt
mkdir -p "$LOGS" "$DATA" "$DEST"
: > "$RES"
: > "$STAT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PY DATA RES DEVICE TINY WORK
if ((TINY)); then export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"; fi
START=$(date +%s)
DEADLINE=$((START + BUDGET))

# ------------------------------------------------------------------ sizes of each mode
if ((TINY)); then
  SYNTH=(--genes 32 --slices 1 --bins 400); SHARD=8; RES_BASE=16; RES_SMALL=16
  MODEL_ARGS=(--device cpu --runs tiny:16:4 --steps 2 --warmup 1 --threads 1)
  COMPILE_ARGS=(--compile --compile-backend aot_eager)
  TRAIN_BASE=(--config configs/tiny.yaml train_batch_size=4 max_steps=12 logging_steps=3
              dataloader_num_workers=0 mixed_precision=no)
  TRAIN_SMALL=(--config configs/tiny.yaml train_batch_size=8 max_steps=12 logging_steps=3
               dataloader_num_workers=1 mixed_precision=no)
  STREAM_ARGS=(--workers 0,1 --batch 8 --seconds 1)
  STEP_ARGS=(--device cpu --preset tiny --batch 4 --warmup 1 --steps 3 --phase-steps 2
             --profile-steps 1 --reps 2)
  WORKER_TIMEOUT=120
else
  SYNTH=(--genes 2048 --slices 3 --bins 3000); SHARD=256; RES_BASE=64; RES_SMALL=32
  MODEL_ARGS=(--device "$DEVICE" --bf16 --runs base:64:32 --steps 8 --warmup 3)
  COMPILE_ARGS=(--compile)
  TRAIN_BASE=(--config configs/base.yaml train_batch_size=32 max_steps=80 logging_steps=10
              dataloader_num_workers=8 mixed_precision=bf16)
  TRAIN_SMALL=(--config configs/small.yaml train_batch_size=64 max_steps=150 logging_steps=10
               dataloader_num_workers=8 mixed_precision=bf16)
  STREAM_ARGS=(--workers 0,1,4,8 --batch 32 --seconds 3)
  STEP_ARGS=(--device "$DEVICE" --preset base --batch 32 --bf16 --workers 8 --warmup 5 --steps 20
             --phase-steps 10 --profile-steps 3 --reps 10)
  WORKER_TIMEOUT=150
fi
# 2048 genes in 8 shards: with 8 loader workers each reads whole shards (256 genes an epoch, full
# batches of 32 and 64); with fewer genes per worker than a batch every batch is partial, and
# train.py's perf/examples_per_s (steps x train_batch_size) overstates what was trained.
# End of run: validation sampling and export stay short.
TRAIN_COMMON=(validation_steps=1000000 checkpointing_steps=1000000 validation.num_genes=1
              validation.num_inference_steps=2 validation.loss_batches=1 report_to=tensorboard)

# ------------------------------------------------------------------ stages
stage_env() {
  if ! "$PY" -c "import diffusers, datasets, anndata" 2>/dev/null; then
    if [[ -d /tmp/site ]]; then export PYTHONPATH="/tmp/site:$PYTHONPATH"; fi
    if ! "$PY" -c "import diffusers, datasets, anndata" 2>/dev/null; then
      if ! compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
        echo "diffusers/datasets/anndata missing and no wheels in .whl/ (see the top of $0)"
        return 1
      fi
      echo "installing $(ls "$ROOT"/.whl/*.whl | wc -l) wheels from .whl/ into /tmp/site"
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$ROOT"/.whl/*.whl
    fi
  fi
  "$PY" - <<'EOF'
import importlib.metadata as md, json, os, platform, subprocess
import torch
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
pk = {n: version(n) for n in ("torch", "diffusers", "datasets", "anndata", "accelerate", "pandas",
                              "pyarrow", "huggingface-hub", "numpy", "transformers", "peft")}
# what train.py imports must work, not only exist (diffusers.training_utils pulls in
# transformers and peft where they are installed)
import anndata, datasets.distributed, diffusers  # noqa: F401,E401
from diffusers.training_utils import EMAModel  # noqa: F401
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                          "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
except OSError:
    smi = ""
row = {"bench": "env", "gpu": gpu, "nvidia_smi": smi, "python": platform.python_version(),
       "cpus": os.cpu_count(), **pk}
print(json.dumps(row))
with open(os.environ["RES"], "a") as fh:
    fh.write(json.dumps(row) + "\n")
if os.environ["DEVICE"] == "cuda" and not torch.cuda.is_available():
    raise SystemExit("--device cuda: torch sees no CUDA device")
EOF
}

stage_data() {
  if [[ ! -f "$DATA/atlas/atlas.h5ad" ]]; then
    "$PY" tools/synth_atlas.py --out "$DATA/atlas" "${SYNTH[@]}" --no-preview
  fi
  local r
  for r in $(printf '%s\n' "$RES_BASE" "$RES_SMALL" | sort -u); do
    if [[ ! -f "$DATA/d$r/videogene_meta.json" ]]; then
      "$PY" tools/prepare_dataset.py "$DATA/atlas/atlas.h5ad" --out "$DATA/d$r" --resolution "$r" \
        --shard-genes "$SHARD"
    fi
  done
}

stage_model_eager() {
  "$PY" benchmarks/bench_model.py "${MODEL_ARGS[@]}" --no-append --json "$RES" \
    --worker-timeout "$WORKER_TIMEOUT"
}

stage_model_compiled() {
  "$PY" benchmarks/bench_model.py "${MODEL_ARGS[@]}" "${COMPILE_ARGS[@]}" --no-baseline \
    --no-append --json "$RES"
}

train_run() {  # name dataset-resolution args...
  local name=$1 r=$2; shift 2
  local out="$WORK/train_$name"
  "$PY" train.py "$@" "${TRAIN_COMMON[@]}" data.path="$DATA/d$r" output_dir="$out"
  "$PY" - "$name" "$out" "$@" <<'EOF'
import json, os, statistics, sys
sys.path.insert(0, os.path.join(os.environ["ROOT"], "benchmarks"))
from _common import steady, train_perf
name, out, args = sys.argv[1], sys.argv[2], sys.argv[3:]
values = train_perf(out)
sps = values.get("perf/steps_per_s", [])
eps = values.get("perf/examples_per_s", [])
if not sps:
    raise SystemExit(f"no perf/steps_per_s in {out}/logs")
opts = dict(a.split("=", 1) for a in args if "=" in a)
row = {"bench": "train", "name": name, "config": args[1] if args[:1] == ["--config"] else "",
       "batch": int(opts.get("train_batch_size", 0)), "workers": int(opts.get("dataloader_num_workers", 0)),
       "mixed_precision": opts.get("mixed_precision", ""), "intervals": len(sps),
       "first_interval_steps_per_s": sps[0], "steps_per_s": statistics.median(steady(sps)),
       "examples_per_s": statistics.median(steady(eps))}
print(json.dumps(row))
with open(os.environ["RES"], "a") as fh:
    fh.write(json.dumps(row) + "\n")
EOF
}
stage_train_base() { train_run base "$RES_BASE" "${TRAIN_BASE[@]}"; }
stage_train_small() { train_run small "$RES_SMALL" "${TRAIN_SMALL[@]}"; }

stage_stream() {
  local sets=("$DATA/d$RES_SMALL")
  [[ "$RES_BASE" != "$RES_SMALL" ]] && sets+=("$DATA/d$RES_BASE")
  "$PY" benchmarks/bench_stream.py --dataset "${sets[@]}" "${STREAM_ARGS[@]}" --no-append --json "$RES"
}

stage_step() {
  "$PY" benchmarks/bench_step.py "${STEP_ARGS[@]}" --dataset "$DATA/d$RES_BASE" --no-append --json "$RES"
}

export -f stage_env stage_data stage_model_eager stage_model_compiled train_run stage_train_base \
  stage_train_small stage_stream stage_step

# arrays do not cross `bash -c`: pass them as declarations
ARRAYS="$(declare -p SYNTH MODEL_ARGS COMPILE_ARGS TRAIN_BASE TRAIN_SMALL STREAM_ARGS STEP_ARGS TRAIN_COMMON)"
export ARRAYS SHARD RES_BASE RES_SMALL WORKER_TIMEOUT ROOT

# caps in seconds (the deadline cuts them further)
declare -A CAP=([env]=90 [data]=90 [model_eager]=170 [train_base]=120 [stream]=75
                [model_compiled]=170 [train_small]=80 [step]=90)
FAILED=()
for name in env data model_eager train_base stream model_compiled train_small step; do
  [[ ",$STAGES," == *",$name,"* ]] || continue
  now=$(date +%s)
  left=$((DEADLINE - now))
  if ((left < 20)); then
    printf '%s\tskipped\t0\tbudget spent\n' "$name" >> "$STAT"
    echo "=== stage $name: SKIPPED (budget of ${BUDGET}s spent)"
    continue
  fi
  limit=${CAP[$name]}
  ((limit > left)) && limit=$left
  echo "=== stage $name (limit ${limit}s, $((now - START))s elapsed)"
  t0=$(date +%s)
  rc=0
  timeout -k 10 "$limit" bash -c "set -euo pipefail; eval \"\$ARRAYS\"; cd \"\$ROOT\";
    if [[ -d /tmp/site && \"$DEVICE\" == cuda ]]; then export PYTHONPATH=/tmp/site:\$PYTHONPATH; fi
    stage_$name" > "$LOGS/$name.log" 2>&1 || rc=$?
  dt=$(($(date +%s) - t0))
  if ((rc == 0)); then
    status=ok; why=""
  elif ((rc == 124 || rc == 137)); then
    status=TIMEOUT; why="killed after ${limit}s"
  else
    status=FAILED; why="exit $rc: $(grep -v '^\s*$' "$LOGS/$name.log" | tail -n 1 | cut -c1-150)"
  fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$dt" "$why" >> "$STAT"
  echo "=== stage $name: $status (${dt}s) $why"
  if [[ $status != ok ]]; then
    FAILED+=("$name")
    echo "--- last lines of $name.log:"
    tail -n 15 "$LOGS/$name.log" | cut -c1-300
  fi
done

# ------------------------------------------------------------------ the table
for f in "$LOGS"/*.log; do
  [[ -e "$f" ]] || continue
  echo "############ $(basename "$f")"
  tail -c 200000 "$f"
done > "$DEST/logs.txt"
cp "$RES" "$DEST/results.jsonl"
"$PY" - "$STAT" "$RES" "$DEST/gpu_check.md" "$MODE" "$(( $(date +%s) - START ))" <<'EOF'
import datetime, json, subprocess, sys
stat, res, dest, mode, total = sys.argv[1:6]
rows = [json.loads(line) for line in open(res) if line.strip()]
stages = [line.rstrip("\n").split("\t") for line in open(stat) if line.strip()]
by = lambda bench: [r for r in rows if r.get("bench") == bench]  # noqa: E731
env = (by("env") or [{}])[0]
out = []
try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
except OSError:
    commit = "unknown"
out.append(f"## GPU check ({mode}): {env.get('gpu', '?')}\n")
out.append(f"{datetime.datetime.now():%Y-%m-%d %H:%M}, commit {commit}; {env.get('nvidia_smi') or 'no nvidia-smi'}; "
           f"{env.get('cpus', '?')} CPUs; Python {env.get('python', '?')}, torch {env.get('torch', '?')}, "
           f"diffusers {env.get('diffusers', '?')}, datasets {env.get('datasets', '?')}; "
           f"`bash benchmarks/gpu_check.sh{' --device cpu --tiny' if mode == 'tiny' else ''}`, {total} s in all.\n")
out.append("| stage | status | s | note |\n|---|---|---|---|")
out += [f"| {s[0]} | {s[1]} | {s[2]} | {s[3] if len(s) > 3 else ''} |" for s in stages]
table = []
model = by("model")
ours_e = next((r for r in model if r["model"].startswith("VideoGene") and not r.get("compile")), None)
ours_c = next((r for r in model if r["model"].startswith("VideoGene") and r.get("compile")), None)
base = next((r for r in model if r["model"].startswith("UNet3D")), None)
def model_row(label, r, extra=""):
    if r is None:
        table.append((label, "not measured", extra))
        return
    mfu = f", MFU {100 * r['MFU']:.1f}%" if r.get("MFU") is not None else ""
    table.append((label, f"{r['examples_per_s']:.1f} examples/s ({r['step_s'] * 1e3:.0f} ms/step, "
                  f"{r['train_TFLOP_s']:.3g} TFLOP/s{mfu})", extra))
shape = lambda r: f"{r['model']} {r['shape']} b{r['batch']}" if r else ""  # noqa: E731
model_row(f"model eager: {shape(ours_e)}", ours_e, "H100 earlier: base 64x64 b32 bf16 102 ex/s, MFU 5.7%")
comp = ""
if ours_c and ours_c.get("first_step_s") is not None:
    comp = f"compile ~{ours_c['first_step_s'] - ours_c['step_s']:.0f} s (first step {ours_c['first_step_s']:.0f} s)"
model_row(f"model compiled: {shape(ours_c)}", ours_c, comp or "goal MFU >= 35%")
model_row(f"diffusers baseline: {shape(base)}", base,
          f"{base['params_M']:.1f} M vs {ours_e['params_M']:.1f} M parameters" if base and ours_e else "")
if base and ours_e:
    table.append(("speed-up ours (eager) / diffusers", f"{ours_e['examples_per_s'] / base['examples_per_s']:.2f}x",
                  "CPU figure in docs/benchmarks.md; goal >= 1.5x"))
ref = ours_c or ours_e
for t in by("train"):
    note = ""
    if t["name"] == "base" and ours_e:
        note = f"{t['examples_per_s'] / ours_e['examples_per_s']:.0%} of model-only eager (goal >= 90%)"
        if ours_c:
            note += f", {t['examples_per_s'] / ours_c['examples_per_s']:.0%} of compiled"
    if t["name"] == "small":
        note = "H100 earlier: small 32 px b64 bf16, 8 workers: 7 steps/s, 420 ex/s"
    table.append((f"train.py {t['config']} b{t['batch']} {t['mixed_precision']} {t['workers']} workers",
                  f"{t['steps_per_s']:.2f} steps/s, {t['examples_per_s']:.0f} examples/s "
                  f"(median of {t['intervals'] - 1 or 1} intervals; first {t['first_interval_steps_per_s']:.2f})", note))
stream = by("stream")
consume = {t["name"]: t["examples_per_s"] for t in by("train")}
for r in stream:
    need = consume.get("base") if r["resolution"] == max(s["resolution"] for s in stream) else consume.get("small")
    note = f"{r['shards']} shards, mean batch {r['mean batch']:.1f}, longest wait {r['longest wait ms']:.0f} ms"
    if need and r["workers"]:
        note += f"; {r['examples/s'] / need:.1f}x what train.py consumed at that size (goal >= 3x)"
    table.append((f"stream {r['resolution']} px, {r['workers']} workers, batch {r['batch']}",
                  f"{r['examples/s']:.0f} examples/s ({r['examples/s per worker']:.0f} per worker)", note))
for st in by("step"):
    table.append((f"bench_step loop {st['preset']} {st['shape']} b{st['batch']}",
                  f"{st['loop_examples_per_s']:.1f} examples/s; model-only {st['model_only_examples_per_s']:.1f}; "
                  f"ratio {st['loop_over_model_only']:.2f}",
                  f"{sum(s['per step'] for s in st['sync_sites']):.0f} sync calls/step" if st.get("sync_sites") else
                  "phase breakdown in logs.txt"))
out.append("\n| measurement | figure | note |\n|---|---|---|")
out += [f"| {a} | {b} | {c} |" for a, b, c in table]
text = "\n".join(out) + "\n"
open(dest, "w").write(text)
print("\n" + text)
EOF
if ((${#FAILED[@]})); then
  echo "gpu_check.sh: stages not ok: ${FAILED[*]} (details in $DEST/logs.txt)"
fi
