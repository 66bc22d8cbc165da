#!/usr/bin/env python
"""Would a bimodality check leave the scene-split prior empty where it misleads? Each held-out event of the protocol's
dB and ETCI folds, its chips pooled as one scene (every 4th pixel, as `floodseg.predict.event_splits` reads them):
Otsu's VH split, Ashman's D of the two classes it makes (sqrt(2) |m1 - m0| / sqrt(s0² + s1²); D > 2 is the usual
test of a clean two-mode histogram), the share of pixels below the split, the labelled water share, and the IoU of
`VH < split` against the labels.

    OMP_NUM_THREADS=1 nice python bench/bimodality.py     # -> bench/protocol/bimodality.md
"""
import sys, warnings
from pathlib import Path
import numpy as np, pandas as pd
sys.path.insert(0, str(Path(__file__).parent))
import protocol
from floodseg.io import read_chip
from floodseg.baselines import otsu_threshold
from floodseg.interpret import md_table

def ashman(x, s):
    a, b = x[x < s], x[x >= s]
    return float(np.sqrt(2) * abs(b.mean() - a.mean()) / np.sqrt(a.var() + b.var())), len(a) / len(x)

def event_rows(fold, step=4):
    _, test = protocol.fold_chips(fold)
    for e, g in test.groupby('event'):
        vals, labs = [], []
        for r in g.itertuples(index=False):
            c = read_chip(r)
            vals.append(c.image[:, ::step, ::step].reshape(2, -1))
            labs.append(np.full(vals[-1].shape[1], 255, np.uint8) if c.label is None else c.label[::step, ::step].ravel())
        x, lab = np.concatenate(vals, 1), np.concatenate(labs)
        ok = np.isfinite(x).all(0)
        vh, lab = x[1][ok], lab[ok]
        s = otsu_threshold(vh)
        d, dark = ashman(vh, s)
        w, v = lab == 1, lab != 255
        yield dict(fold=fold, event=e, chips=len(g), split=round(s, 2), ashman_d=round(d, 2), dark_share=round(dark, 3),
                   water_share=round(float(w[v].mean()), 3) if v.any() else None,
                   otsu_iou=round(float(((vh < s) & w & v).sum() / max((((vh < s) | w) & v).sum(), 1)), 3))

if __name__ == '__main__':
    warnings.simplefilter('ignore')
    df = pd.DataFrame([r for f in ('db1', 'db2', 'db3', 'nal', 'neb') for r in event_rows(f)])
    out = Path(__file__).parent/'protocol'/'bimodality.md'
    out.write_text("# Bimodality of each held-out event's VH (bench/bimodality.py)\n\n" + md_table(df) + '\n')
    print(out.read_text())
