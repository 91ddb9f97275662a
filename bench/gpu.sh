#!/usr/bin/env bash
# Every GPU measurement the project records, in one go: a lent GPU machine's minutes are few, so one prepared
# script runs them all, each under its own time limit, and keeps going when one fails.
#
#     bench/gpu.sh OUT_DIR benches     # decoding (engine at 1, 16 and 64 prompts), serving (16 and 64 users),
#                                      # training throughput
#     bench/gpu.sh OUT_DIR retrain M   # the toxicity adapter retrained for M minutes (two settings side by side),
#                                      # then each evaluated on the held-back prompts
#
# Every log and JSON result lands in OUT_DIR (results.tgz is refreshed after each step, so a run cut short still
# leaves what it measured). Run from the repository root, with the project's packages importable.
set -u
out=${1:?usage: bench/gpu.sh OUT_DIR benches|retrain [MINUTES]}
what=${2:-benches}
minutes=${3:-3}
py=${PYTHON:-python3}
mkdir -p "$out/logs"
export PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

step() {  # step NAME SECONDS COMMAND...: run one measurement under a limit, log it, keep going whatever it returns
  local name=$1 limit=$2 started=$SECONDS
  shift 2
  echo "== $name (limit ${limit} s)"
  timeout -k 10 "$limit" "$@" >"$out/logs/$name.log" 2>&1
  echo "== $name: exit $? after $((SECONDS - started)) s"
  tail -n 12 "$out/logs/$name.log"
  tar czf "$out/results.tgz" -C "$out" logs
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/logs/gpu.txt" 2>&1
$py -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())" \
  >>"$out/logs/gpu.txt" 2>&1
step prepare 100 $py -m ipa.models --prepare

if [ "$what" = benches ]; then
  step decode 150 $py -m bench.decode --device cuda --batches 1,16,64 --tokens 64 --repeats 3 --out '' \
    --json "$out/logs/decode.json"
  step serve 130 $py -m bench.serve --app-args "--device cuda" --concurrency 16,64 --tokens 32 --repeats 2 --out '' \
    --json "$out/logs/serve.json"
  step train 70 $py -m bench.train --device cuda --batch-size 256 --micro-batch-size 64 --steps 4 --write ''
elif [ "$what" = retrain ]; then
  # Two runs side by side on the one GPU (each is bound by kernel launches, so they overlap): the shipped adapter
  # continued with a stronger relevance term, and a fresh adapter with the same term; 512 samples a step (128
  # prompts x 4), twice the shipped adapter's 256. Each evaluates itself on 64 held-back prompts x 4 before and
  # after (its evals.jsonl); the adapters come back for the CPU evaluation that writes their cards.
  work=${TMPDIR:-/tmp}/ipa-gpu-runs
  common=(--task toxicity --device cuda --batch-size 512 --micro-batch-size 128 --minutes "$minutes"
          --relevance-weight 1.0 --eval-prompts 64 --eval-samples 4 --eval-every 0 --samples-every 10)
  timeout -k 10 $((minutes * 60 + 150)) $py -m ipa.training.loop "${common[@]}" --init-adapter adapters/trained/toxicity \
    --lr 5e-5 --out "$work/continued" >"$out/logs/retrain_continued.log" 2>&1 &
  timeout -k 10 $((minutes * 60 + 150)) $py -m ipa.training.loop "${common[@]}" --lr 1.5e-4 --out "$work/fresh" \
    >"$out/logs/retrain_fresh.log" 2>&1 &
  wait
  for run in continued fresh; do
    echo "== retrain $run"
    tail -n 5 "$out/logs/retrain_$run.log"
    for f in metrics evals samples; do cp "$work/$run/$f.jsonl" "$out/logs/${run}_$f.jsonl" 2>/dev/null; done
    [ -d "$work/$run/adapter" ] && tar czf "$out/adapter_$run.tgz" -C "$work/$run" adapter
  done
  tar czf "$out/results.tgz" -C "$out" logs
fi
