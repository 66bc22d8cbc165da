#!/usr/bin/env python
"""Inference cost of each protocol recipe's network on this CPU: GMAC and parameters per 256² tile, and the median
seconds of one forward pass on a 512² tile (divided by 4: per 256² tile) in float32 and in bfloat16 (autocast +
channels-last), with 2 torch threads. Run it on an otherwise idle machine; it writes bench/protocol/cost.json,
which `python bench/protocol.py --table-only` puts into bench/PROTOCOL.md.

    python bench/cost.py
"""
import json, sys, warnings
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))
from protocol import RECIPES, OUT
from floodseg.learner import model_cost

torch.set_num_threads(2)
res, seen = {}, {}
for name, rc in RECIPES.items():
    key = (rc['arch'], rc['cut'], rc['last_cross'])
    if key not in seen:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            f32 = model_cost(n=5, size=512, precision='fp32', arch=rc['arch'], cut=rc['cut'], last_cross=rc['last_cross'])
            b16 = model_cost(n=5, size=512, precision='bf16', arch=rc['arch'], cut=rc['cut'], last_cross=rc['last_cross'])
        seen[key] = dict(arch=rc['arch'], cut=rc['cut'], last_cross=rc['last_cross'], gmac_per_256=f32['gmac'], mparams=f32['mparams'],
                         fp32_mb=f32['mparams'] * 4 / 1.048576, fp32_s_per_256=f32['seconds'] / 4, bf16_s_per_256=b16['seconds'] / 4, threads=2)
        print(seen[key], flush=True)
    res[name] = seen[key]
(OUT/'cost.json').write_text(json.dumps(res, indent=1))
print(f"wrote {OUT/'cost.json'}")
