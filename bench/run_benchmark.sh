#!/usr/bin/env bash
# The ETCI 2021 cross-event benchmark reported in bench/RESULTS.md: floodseg's default model, trained on one shared
# ETCI event and scored on the other, in both directions. The two directions run side by side with one torch thread
# each (the machine has 2 cores), each under /usr/bin/time -v for wall time, CPU time and peak memory.
# Usage: bash bench/run_benchmark.sh   (from the repository root, venv active; ../shared/data/etci2021 present)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=northal_20190302t234651; B=nebraska_20170213t002121
mkdir -p bench/results
run() { OMP_NUM_THREADS=1 /usr/bin/time -v python bench/etci_benchmark.py "$@" > "bench/results/$NAME.log" 2>&1; }
NAME=default_neb2nal run --train-event $B --valid-event $N --epochs ${NEB_EPOCHS:-20} --name default_neb2nal &
NAME=default_nal2neb run --train-event $N --valid-event $B --epochs ${NAL_EPOCHS:-14} --name default_nal2neb &
wait
for n in default_neb2nal default_nal2neb; do
  grep -E "Elapsed|Maximum resident|User time|System time" bench/results/$n.log
done
