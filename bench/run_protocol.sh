#!/usr/bin/env bash
# Run the generalisation protocol (bench/protocol.py) for recipes x folds x seeds at one CPU budget, two 1-thread
# runs side by side (the machine has 2 cores), niced; runs whose result exists are skipped.
# Usage: bash bench/run_protocol.sh BUDGET "RECIPE..." ["FOLD..."] ["SEED..."]
#   BUDGET: CPU minutes (8), or nSTEPS for a step budget, the same training on any machine (n50)
#   e.g. bash bench/run_protocol.sh 8 "old_default auto" "nal neb s1" "0 1 2"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
budget=$1; recipes=$2
if [[ $budget == n* ]]; then suffix=$budget; opt="--steps ${budget#n}"; else suffix=b$budget; opt="--budget $budget"; fi
folds=${3:-"nal neb s1"}; seeds=${4:-"0 1 2"}
mkdir -p bench/protocol/logs
export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore
for f in $folds; do python -c "import sys; sys.path.insert(0, 'bench'); import protocol; protocol.baselines('$f')"; done
jobs=()
for s in $seeds; do for r in $recipes; do for f in $folds; do
  [ -f "bench/protocol/runs/${r}_${f}_s${s}_${suffix}.json" ] || jobs+=("$r $f $s")
done; done; done
printf '%s\n' "${jobs[@]}" | xargs -r -P 2 -L 1 bash -c \
  'nice -n 10 python bench/protocol.py --recipe $0 --fold $1 --seed $2 '"$opt"' > bench/protocol/logs/$0_$1_s$2_'"$suffix"'.log 2>&1; tail -1 bench/protocol/logs/$0_$1_s$2_'"$suffix"'.log'
