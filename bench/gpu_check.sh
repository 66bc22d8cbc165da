#!/usr/bin/env bash
# GPU check (issue 26, part 3): the GPU path of training, mapping and scaling, in one script that runs in a few minutes.
#
#   1. floodseg_train, default recipe, on the shared data (else the embedded sample), through a chip cache (--cache),
#      for --steps N optimizer steps (seed 0), at fp16 and at bf16 on DEVICE and at auto precision on the CPU (the
#      reference): seconds per epoch, the loader's share of training time, the one-cycle lr and momentum of every step
#      (each run's schedule.csv), validation water IoU after N steps and its difference to the CPU run's.
#      On a CPU, fp16 is refused in one line (fastai's mixed precision is CUDA's); the refusal is recorded.
#   2. floodseg_predict --device DEVICE on a SIDE² mosaic of the shared Sen1Floods11 chips (bench/scale.py's `mosaic`):
#      tiles per second (the command's wall clock, start-up and COG writing included, and the forward passes alone, from
#      map_scene's timings) and the largest probability difference to the CPU map.
#   3. bench/scale.py --device DEVICE with 1, 2, 4 and 8 Dask workers (its table goes to OUT/scale.md; bench/SCALE.md is
#      left alone).
#
# Usage (from the repository root, in the environment where floodseg is installed):
#   bash bench/gpu_check.sh [--device cuda|cpu] [--small] [--steps N] [--out DIR] [--record FILE]
#     --device  cuda (default) or cpu: the dry run, which checks every step of the script on a machine without a GPU
#     --small   6 steps, a 1024² mosaic, 512² scenes, Dask workers 1 and 2 (the CPU dry run's sizes)
#     --steps   optimizer steps per training run (default 100; 6 with --small)
#     --out     working folder (default gpu_check_out; replaced)
#     --record  also write the summary to FILE (e.g. bench/GPU_CHECK.md), keeping what is below its '<!-- notes -->' marker
# The summary is OUT/summary.md; everything each step printed is in OUT/*.log.
set -uo pipefail
ARGS="$*"
DEVICE=cuda; SMALL=0; STEPS=; OUT=gpu_check_out; RECORD=
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2;;
    --small) SMALL=1; shift;;
    --steps) STEPS=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --record) RECORD=$2; shift 2;;
    *) echo "gpu_check.sh: unknown option $1 (see the header of $0)" >&2; exit 2;;
  esac
done
case "$DEVICE" in cpu|cuda|cuda:*) ;; *) echo "gpu_check.sh: --device must be cpu or cuda, not $DEVICE" >&2; exit 2;; esac
if [ "$SMALL" = 1 ]; then STEPS=${STEPS:-6}; SIDE=1024; SCALE_ARGS=(--side 512 --big 1024 --workers 1,2 --skip-train)
else STEPS=${STEPS:-100}; SIDE=8192; SCALE_ARGS=(--side 1536 --big 8192 --workers 1,2,4,8 --skip-train); fi
BIN=$(dirname "$(command -v python)")
rm -rf "$OUT"; mkdir -p "$OUT"
START=$(date +%s)
python -c "import floodseg, torch; print('floodseg', floodseg.__version__, 'from', floodseg.__file__, '| torch', torch.__version__, '| cuda available:', torch.cuda.is_available())" | tee "$OUT/env.log"
DATA=$(python -c "from floodseg.io import shared_data; d = shared_data(); print(d or '')")
DATA_ARGS=()
if [ -n "$DATA" ]; then DATA_ARGS=(--data "$DATA/sen1floods11" "$DATA/stac_overflow" "$DATA/etci2021"); echo "data: $DATA"; else echo "data: the embedded sample (no shared data found)"; fi

# 1. training: fp16 and bf16 on DEVICE, auto on the CPU (the reference), one chip cache for all three
train() {   # name, then floodseg_train options; records the exit status and the last line of stderr
  local name=$1; shift
  local t0=$(date +%s)
  "$BIN/floodseg_train" "${DATA_ARGS[@]}" --steps "$STEPS" --seed 0 --cache "$OUT/chip_cache" --out "$OUT/train_$name" --overwrite "$@" \
      > "$OUT/train_$name.log" 2> "$OUT/train_$name.err"
  local rc=$?
  echo "$name	$rc	$(( $(date +%s) - t0 ))	$(grep -v Warning "$OUT/train_$name.err" | tail -n 1)" >> "$OUT/train_runs.tsv"
  echo "train $name: exit $rc in $(( $(date +%s) - t0 )) s; $(tail -n 1 "$OUT/train_$name.log")"
}
printf 'run\trc\tseconds\tlast_error\n' > "$OUT/train_runs.tsv"
train "${DEVICE%%:*}_fp16" --device "$DEVICE" --precision fp16
train "${DEVICE%%:*}_bf16" --device "$DEVICE" --precision bf16
train cpu_auto --device cpu --precision auto

# 2. mapping a big mosaic on DEVICE and on the CPU
python - "$OUT" "$SIDE" <<'EOF' 2>&1 | tee "$OUT/mosaic.log"
import sys, warnings; sys.path.insert(0, 'bench')
from pathlib import Path
warnings.simplefilter('ignore')
from scale import mosaic
from floodseg.io import chip_table, read_chip, shared_data, sample_path
out, side = Path(sys.argv[1]), int(sys.argv[2])
chips = chip_table((shared_data() or sample_path())/'sen1floods11')
chips = chips[chips.label.notna()].head(60)
imgs = [c.image for c in map(read_chip, chips.itertuples()) if c.valid.mean() > 0.5]
mosaic(imgs, read_chip(chips.iloc[0]), out/'mosaic.tif', side, 7)
print(f"mosaic {side}x{side} of {len(imgs)} real Sen1Floods11 chips: {out/'mosaic.tif'}")
EOF
predict() {   # name, device
  local t0=$(python -c 'import time; print(time.time())')
  "$BIN/floodseg_predict" "$OUT/mosaic.tif" --device "$2" --formats cog --no-quicklook --out "$OUT/predict_$1" > "$OUT/predict_$1.log" 2>&1
  local rc=$?
  echo "$1	$2	$rc	$(python -c "import time; print(round(time.time() - $t0, 2))")" >> "$OUT/predict_runs.tsv"
  echo "predict $1 on $2: exit $rc"
}
printf 'run\tdevice\trc\tseconds\n' > "$OUT/predict_runs.tsv"
predict device "$DEVICE"
predict cpu cpu
python - "$OUT" "$DEVICE" <<'EOF' 2>&1 | tee "$OUT/forward.log"
import sys, time, json, warnings
from pathlib import Path
warnings.simplefilter('ignore')
from floodseg.predict import Predictor
from floodseg.scene import map_scene
out, dev = Path(sys.argv[1]), sys.argv[2]
res = {}
for d in dict.fromkeys([dev, 'cpu']):
    timings = {}
    p = Predictor.from_folder('default', device=d)
    map_scene(p, out/'mosaic.tif', out/f'forward_{d.replace(":", "_")}', progress=False, quicklook=False, timings=timings)
    res[d] = {k: round(v, 3) for k, v in timings.items()} | dict(precision=getattr(p, 'precision', None))
    print(d, res[d], flush=True)
(out/'forward.json').write_text(json.dumps(res, indent=1, default=str))
EOF

# 3. Dask scale-out on DEVICE
OMP_NUM_THREADS=1 python bench/scale.py "${SCALE_ARGS[@]}" --device "$DEVICE" --out "$OUT/scale.md" > "$OUT/scale.log" 2>&1
echo "scale.py: exit $?"

# summary
python - "$OUT" "$DEVICE" "$STEPS" "$SIDE" "$SMALL" "$START" "$ARGS" <<'EOF'
import sys, json, os, platform, subprocess, time
from datetime import date
from pathlib import Path
import numpy as np, pandas as pd, rasterio
from floodseg.scene import tile_offsets
out, dev, steps, side, small, start = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == '1', float(sys.argv[6])
def md(df): return '\n'.join(['| ' + ' | '.join(map(str, df.columns)) + ' |', '|' + '---|' * len(df.columns)] + ['| ' + ' | '.join(map(str, r)) + ' |' for r in df.itertuples(index=False)])
cpu = next((l.split(':', 1)[1].strip() for l in subprocess.run(['lscpu'], capture_output=True, text=True).stdout.splitlines() if l.startswith('Model name')), '?')
try: gpu = subprocess.run(['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'], capture_output=True, text=True).stdout.strip() or 'none'
except FileNotFoundError: gpu = 'none (no nvidia-smi)'
lines = [f"# GPU check\n\n{date.today()}, {platform.node()}: CPU {cpu} ({os.cpu_count()} cores, AVX512-BF16 {'yes' if 'avx512_bf16' in open('/proc/cpuinfo').read() else 'no'}), GPU {gpu}; "
         f"{(time.time() - start) / 60:.1f} min in all.\n\n    bash bench/gpu_check.sh {' '.join(sys.argv[7:]) if len(sys.argv) > 7 else ''}\n".replace('  \n', '\n')]
runs = pd.read_csv(out/'train_runs.tsv', sep='\t')
rows, sched = [], {}
for r in runs.itertuples():
    mf = out/f'train_{r.run}'/'metrics.json'
    if r.rc != 0 or not mf.exists():
        rows.append(dict(run=r.run, device='', precision='', steps='', s_per_epoch='', s_per_step='', loader_share='', water_iou='', d_iou_vs_cpu='', note=f"exit {r.rc}: {r.last_error}")); continue
    m = json.loads(mf.read_text()); t = m['timing']
    sched[r.run] = pd.read_csv(out/f'train_{r.run}'/'schedule.csv')
    rows.append(dict(run=r.run, device=t['device'], precision=t['precision'], steps=t['steps'], s_per_epoch=', '.join(f'{e:.1f}' for e in t['epoch_s']),
                     s_per_step=round(t['step_s'], 3), loader_share=f"{t['loader_share']:.1%}", water_iou=round(m['best_epoch']['water_iou'], 4), d_iou_vs_cpu='',
                     note=f"{r.seconds} s wall; cache {t['cache']['hits']} hits, {t['cache']['misses']} misses"))
tr = pd.DataFrame(rows)
ref = tr[tr.run == 'cpu_auto'].water_iou
if len(ref) and ref.iloc[0] != '':
    tr['d_iou_vs_cpu'] = [round(v - ref.iloc[0], 4) if v != '' else '' for v in tr.water_iou]
lines += [f"## 1. floodseg_train, default recipe, {steps} steps, seed 0, through a chip cache\n", md(tr), '']
if 'cpu_auto' in sched:
    for k, s in sched.items():
        if k == 'cpu_auto': continue
        n = min(len(s), len(sched['cpu_auto']))
        lines.append(f"- {k}: one-cycle lr and momentum of its {len(s)} steps (schedule.csv) against the CPU run's: max |Δlr| = "
                     f"{np.abs(s.lr.values[:n] - sched['cpu_auto'].lr.values[:n]).max():.3g}, max |Δmom| = {np.abs(s.mom.values[:n] - sched['cpu_auto'].mom.values[:n]).max():.3g}; "
                     f"lr peaks at step {int(s.lr.idxmax())} ({s.lr.max():.2e}), momentum {s.mom.min():.3f} there")
lines.append('')
pr = pd.read_csv(out/'predict_runs.tsv', sep='\t')
n_tiles = len(tile_offsets(side, 512, 128)) ** 2
pr['tiles_per_s'] = [round(n_tiles / s, 2) for s in pr.seconds]
fw = json.loads((out/'forward.json').read_text()) if (out/'forward.json').exists() else {}
pr['forward_tiles_per_s'] = [round(n_tiles / fw[d]['forward'], 2) if d in fw and 'forward' in fw[d] else '' for d in pr.device]
diff, agree = None, None
try:
    with rasterio.open(out/'predict_device'/'mosaic_water_prob.tif') as a, rasterio.open(out/'predict_cpu'/'mosaic_water_prob.tif') as b, \
         rasterio.open(out/'predict_device'/'mosaic_water_mask.tif') as ma, rasterio.open(out/'predict_cpu'/'mosaic_water_mask.tif') as mb:
        diff = max(float(np.abs(np.nan_to_num(a.read(1, window=w)) - np.nan_to_num(b.read(1, window=w))).max()) for _, w in a.block_windows(1))
        agree = float(np.mean([(ma.read(1, window=w) == mb.read(1, window=w)).mean() for _, w in ma.block_windows(1)]))
except Exception as e: lines.append(f"(maps not compared: {type(e).__name__}: {e})")
lines += [f"## 2. floodseg_predict on a {side}² mosaic of real Sen1Floods11 chips ({n_tiles} tiles of 512², overlap 128)\n", md(pr), '',
          f"- tiles/s: the command's wall clock (start-up, model loading and COG writing included); forward tiles/s: map_scene's forward passes alone",
          f"- max |p(device) - p(cpu)| = {diff if diff is None else round(diff, 5)}; masks agree on {agree if agree is None else f'{agree:.4%}'} of the pixels", '']
sc = out/'scale.md'
lines += ["## 3. bench/scale.py\n", sc.read_text().split('\n', 2)[2].strip() if sc.exists() else f"scale.py wrote no table; see {out/'scale.log'}", '']
text = '\n'.join(lines) + '\n'
(out/'summary.md').write_text(text)
print(text)
EOF
if [ -n "$RECORD" ]; then   # the summary replaces what is above RECORD's '<!-- notes -->' marker; the hand-written notes below it stay
  python -c "import sys, pathlib; s, r = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]); keep = r.read_text().partition('<!-- notes -->')[2] if r.exists() else ''; r.write_text(s.read_text() + ('<!-- notes -->' + keep if keep else ''))" "$OUT/summary.md" "$RECORD"
  echo "summary written to $RECORD"
fi
