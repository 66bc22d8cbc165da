#!/usr/bin/env python
"""Draw the README's flood map: a trained model maps a whole ETCI 2021 event, reassembled from its tiles (floodseg.scene).

Usage: python bench/flood_map_figure.py MODEL_DIR EVENT OUT.png   (e.g. bench/results/default_neb2nal northal_20190302t234651)
"""
import json, sys
from pathlib import Path
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
from floodseg.io import *
from floodseg.predict import Predictor
from floodseg.scene import *

model, event, out = sys.argv[1:4]
pred = Predictor.from_folder(model, device='cpu')
run = Path(__file__).parent/'protocol'/'runs'/f'{Path(model).name}.json'
if run.exists():   # a protocol model saved before models stored their training events' water share: the library's rule now
    sys.path.insert(0, str(Path(__file__).parent)); import protocol
    pred.cfg['stats'] = protocol.water_stats(pred.cfg, json.loads(run.read_text())['fold'])[1]
ev = etci_event_scene(chip_table(shared_data('etci2021')), event)
p = predict_array(pred, ev.image, 'etci2021', progress=False)
fig, iou = show_scene(ev, p, pred.threshold, 'etci2021',
                      title=f"{event}: held-out event mapped by a model trained on the other ETCI event", ncols=2)
fig.savefig(out, dpi=80, bbox_inches='tight')
print(f"scene water IoU {iou:.3f}; wrote {out}")
