#!/usr/bin/env python
"""Experiment: does re-estimating BatchNorm statistics on the held-out event (AdaBN, no labels) help a trained model?

Usage: OMP_NUM_THREADS=1 python bench/adabn_check.py bench/results/default_neb2nal northal_20190302t234651
Measured (session 3): neb2nal 0.7474 -> 0.6335, nal2neb 0.3417 -> 0.3395: it does not help.
"""
import sys, warnings, time, torch, numpy as np
warnings.simplefilter('ignore')
from floodseg.io import *
from floodseg.learner import *
from floodseg.interpret import *
model_dir, event = sys.argv[1:3]
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
chips = chip_table(shared_data('etci2021')); chips = chips[chips.event == event]
model, cfg = load_model(model_dir, device='cpu')
def pooled(m):
    ev = evaluate_chips(m, cfg, chips, progress=False)
    return compare_table(ev.per_event()).loc['all', 'model']
t = time.time(); base = pooled(model); print('as trained', round(base, 4), f'{time.time()-t:.0f}s', flush=True)
bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
for m in bns: m.reset_running_stats(); m.momentum = None
model.train()
xs = [chip_input(read_chip(r), 'etci2021', cfg['stats']) for r in chips.itertuples()]
with torch.no_grad():
    for i in range(0, len(xs), 8): model(torch.stack(xs[i:i + 8]))
model.eval()
print('AdaBN (BN statistics of the target event, no labels)', round(pooled(model), 4), flush=True)
