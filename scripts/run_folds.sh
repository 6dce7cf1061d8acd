#!/usr/bin/env bash
# Runs a list of methods over folds into one results tree, then summarizes it:
#
#   bash scripts/run_folds.sh [ROOT]            # ROOT defaults to runs/bench
#
# ROOT/<method>/fold_<f>/ is one scripts/crest.py run (its log: ROOT/<method>/fold_<f>.log).
# Resumable: a run with a results.json is skipped, an unfinished one resumes from its
# last checkpoint, so the benchmark may be stopped and restarted at will. Then
# scripts/summarize.py writes ROOT/summary/summary.md and its plots.
#
# Methods are the presets of crest/presets.py (`python -m crest.presets` lists them), all
# at the same total budget of GENERATIONS x STEPS steps (paper Table 2 rule): the
# self-training ones (CReST, CReST+, alpha0, ...) train GENERATIONS generations of STEPS,
# the others one generation of the whole budget. The "+ LA" presets train nothing: their
# numbers are read off the runs of the method they adjust (summarize does that).
#
# Settings (environment variables, defaults = the Fashion-MNIST-LT CPU benchmark of
# docs/archive/results_first_edition.md): METHODS (names, or `all` for every preset that
# trains), FOLDS (for every method but alpha0), ALPHA0_FOLDS, GENERATIONS, STEPS (per
# generation), EVAL_EVERY, JOBS (runs in parallel, each with cores / JOBS threads), and EXTRA (more
# scripts/crest.py flags for every run).
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-runs/bench}
methods=${METHODS:-fixmatch fixmatch_da05 fixmatch_crest fixmatch_crest_plus alpha0}
folds=${FOLDS:-1 2 3}
alpha0_folds=${ALPHA0_FOLDS:-1}
generations=${GENERATIONS:-2}
steps=${STEPS:-1200}
eval_every=${EVAL_EVERY:-80}
jobs=${JOBS:-2}
threads=$(( $(nproc) / jobs ))
(( threads >= 1 )) || threads=1

bash scripts/setup.sh

common=(--dataset=fashion_mnist_lt --imbalance=100 --label_fraction=0.1 --arch=cnn_small
        --batch_size=32 --uratio=1 --lr_decay_level=7 --ema_warmup --seed=1
        --eval_every="$eval_every" --cpu_threads="$threads")
total=$(( generations * steps ))

# name -> kind (single, self_training, derived), from the registry.
[ "$methods" = all ] && methods=$(.venv/bin/python -m crest.presets | cut -f1)
declare -A kind
listing=$(.venv/bin/python -m crest.presets $methods) || exit 1
canonical=()
while IFS=$'\t' read -r name method_kind _; do
  kind[$name]=$method_kind
  canonical+=("$name")
done <<< "$listing"
methods="${canonical[*]}"

method_flags() {
  case "${kind[$1]}" in
    single) echo "--method=$1 --total_steps=$total" ;;
    self_training) echo "--method=$1 --total_steps=$total --generations=$generations" ;;
  esac
}

# One line per run still to do: "<workdir> <flags...>", fold by fold, so that a partial
# benchmark already compares every method on the first folds.
todo=()
for fold in $(printf '%s\n' $folds $alpha0_folds | sort -nu); do
  for method in $methods; do
    if [ "${kind[$method]}" = derived ]; then
      (( fold == $(printf '%s\n' $folds $alpha0_folds | sort -n | head -1) )) &&
        echo "run_folds: $method trains nothing of its own: summarize reads it off another run"
      continue
    fi
    method_folds=$folds
    [ "$method" = alpha0 ] && method_folds=$alpha0_folds
    case " $method_folds " in *" $fold "*) ;; *) continue ;; esac
    flags=$(method_flags "$method")
    dir="$root/$method/fold_$fold"
    if [ -f "$dir/results.json" ]; then
      echo "run_folds: $dir finished earlier, skipped"
      continue
    fi
    # No trailing blank: xargs -L would join the next line to this one.
    todo+=("$dir ${common[*]} $flags --fold=$fold${EXTRA:+ $EXTRA}")
  done
done
echo "run_folds: ${#todo[@]} run(s) to do, $jobs at a time, logs in $root/<method>/fold_<f>.log"

run_one() {
  local dir=$1; shift
  mkdir -p "$(dirname "$dir")"
  local start=$SECONDS
  if .venv/bin/python scripts/crest.py "$@" --workdir="$dir" > "$dir.log" 2>&1; then
    echo "run_folds: $dir done in $(( (SECONDS - start) / 60 )) min: $(grep 'mean of last' "$dir.log" | tail -1)"
  else
    echo "run_folds: $dir FAILED, see $dir.log" >&2
    return 1
  fi
}
export -f run_one

status=0
if [ ${#todo[@]} -gt 0 ]; then
  printf '%s\n' "${todo[@]}" | xargs -P "$jobs" -L 1 bash -c 'run_one "$@"' _ || status=$?
fi
.venv/bin/python scripts/summarize.py --runs="$root" --output="$root/summary" > /dev/null
echo "run_folds: summary in $root/summary/summary.md"
exit $status
