#!/usr/bin/env python
"""Inference-side levers of the generalisation protocol, on its saved models (no retraining).

1. Test-time augmentation subsets: the water probability averaged over 1 (none), 2 (identity + horizontal flip) or 4
   (identity, both flips, 180° rotation) dihedral transforms, at inference cost x1, x2, x4. The library's `tta=True`
   averages all 8 (x8: 0.29 s per 256² tile in bf16 for the cut -3 network, over the 0.08 s budget).
2. The "too little land" question: a mostly-water scene standardised with its own statistics. The held-out event's
   water-richest labelled tiles form synthetic scenes of rising water share; each is scored standardised with its
   own statistics under the model's rule as it was before `at_water_share` (all valid pixels for `auto`, its land for
   `ownland`), under the library's rule now (`norm_stats` with the training events' water share: a wetter scene is
   standardised at that share), with the event's own all-pixel statistics (all of its tiles), and with the stored
   training statistics (the fallback).
3. AdaBN: every BatchNorm layer's statistics recomputed over the held-out event's own tiles (labels unused), against
   the statistics the model was trained with; both under the library's rule (`at_water_share`).
4. A permanent-water map (ETCI `water_body_label`), the issue's optional extra input, measured here as a
   union at prediction time, not as a trained input channel: the map alone, the model or'ed with it, and each
   threshold tuned on the training events or'ed with it. ETCI folds only: the shared Sen1Floods11 chips have no such map.
5. A scene's own bimodal split (dB folds, each chip a scene): a two-Gaussian mixture of the chip's VH (EM from Otsu's
   split), kept only where the two components are well apart (Ashman's D > 2) and the dark one holds 0.5-90 % of the
   pixels, as in split-based thresholding;
   scored alone, or'ed with the model, and as a decision rule (the model's threshold lowered to 0.2 below the split);
   and the same two with the fixed VH < -22 dB threshold in place of the split; and the decision rule with the chip's Otsu VH
   split (defined on every chip, bimodal or not), alone or capped at -22 dB.
   Its constants are set a priori, not on any test chip.
6. Seed ensembles: the mean water probability of two or three models of one recipe and fold that differ only in their
   seed, at 0.5 and with the split rule (the chip's own Otsu VH split where p > 0.2; the event's for an ETCI fold); the
   variance between seeds, not the recipe, at x2 or x3 the inference cost. (`bench/protocol.py --ensemble` scores the
   8 CPU-min runs' seeds the same way at 0.5, pooled per fold; this one keeps each chip, for the dB folds' W / T / L.)

    OMP_NUM_THREADS=1 nice python bench/infer_levers.py --tta auto_ce_land_c3_nal_s0_b8 auto_ce_land_c3_neb_s0_b8
    OMP_NUM_THREADS=1 nice python bench/infer_levers.py --water auto_ce_land_c3_nal_s0_b8
    OMP_NUM_THREADS=1 nice python bench/infer_levers.py --bn auto_ce_land_c3_jitter_nal_s0_b8
    OMP_NUM_THREADS=1 nice python bench/infer_levers.py --perm auto_ce_land_c3_jitter_nal_s0_b8
    OMP_NUM_THREADS=1 nice python bench/infer_levers.py --split auto_ce_land_c3_jitter_db1_s0_b8
    OMP_NUM_THREADS=1 nice python bench/infer_levers.py --ensemble bal_c3_jitter_db1_s0_n200+bal_c3_jitter_db1_s1_n200

Results: bench/protocol/infer/<model>_tta.json, <model>_water.json, <model>_bn.json, <model>_perm.json, ens_<recipe>_<fold>_s<seeds>_<budget>.json; `python bench/protocol.py --table-only` reports them.
"""
import json, sys, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from fastcore.script import call_parse
sys.path.insert(0, str(Path(__file__).parent))
import protocol
from floodseg.io import *
from floodseg.radiometry import *
from floodseg.learner import load_model
from floodseg.predict import *
from floodseg.metrics import confusion, scores, COUNTS
from floodseg.baselines import BAND_INDEX, otsu_threshold

OUT = protocol.OUT/'infer'
TTA_SETS = {'x1': [0], 'x2': [0, 4], 'x4': [0, 2, 4, 6]}   # dihedral k: 4 = horizontal flip, 2 = 180°, 6 = vertical flip

def tta_scores(name, chips):
    "Pooled water IoU at 0.5 of model `name` on `chips` for each of `TTA_SETS` (each transform computed once)."
    model, cfg = load_model(protocol.OUT/'models'/name, device='cpu')
    pred = Predictor(model, dict(cfg, threshold=0.5))
    chips = with_norms(chips, cfg['stats'], cfg.get('norm', 'layout'))
    counts = {s: dict.fromkeys(COUNTS, 0) for s in TTA_SETS}
    for batch, _ in read_batches(chips, 4, progress=False):
        batch = [(r, c) for r, c in batch if c.label is not None]
        if not batch: continue
        xb = torch.stack([chip_input(c, r) for r, c in batch])
        p = {k: undo_dihedral(torch.sigmoid(pred.logits(dihedral(xb, k))), k).numpy() for k in sorted({k for v in TTA_SETS.values() for k in v})}
        for s, ks in TTA_SETS.items():
            ps = np.mean([p[k] for k in ks], 0)
            for i, (r, c) in enumerate(batch):
                q = ps[i].copy(); q[~c.valid] = 0
                for k, v in confusion(q, c.label).items(): counts[s][k] += v
    return {s: scores(**c) for s, c in counts.items()}

def pooled(pred, chips, mean, std):
    "Pooled water scores of `pred` on labelled `chips`, every chip standardised with `mean`, `std`."
    c0 = dict.fromkeys(COUNTS, 0)
    for batch, _ in read_batches(chips, 4, progress=False):
        xb = np.stack([standardise(c.image, mean, std) for r, c in batch])
        for (r, c), p in zip(batch, pred.probs(xb)):
            p[~c.valid] = 0
            for k, v in confusion(p, c.label).items(): c0[k] += v
    return scores(**c0)

def water_scores(name, chips, shares=(None, 0.06, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)):
    "Synthetic mostly-water scenes from the water-richest tiles of `chips`: IoU with own, whole-event and stored statistics."
    model, cfg = load_model(protocol.OUT/'models'/name, device='cpu')
    pred = Predictor(model, dict(cfg, threshold=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        sv = survey_chips(chips[chips.label.notna()], progress=False)
    sv = sv[sv.problem.isna() & (sv.n_valid > 0)].sort_values('water_frac', ascending=False)
    lay = sv.layout.iloc[0]
    nocap, capped = protocol.water_stats(cfg, json.loads((protocol.OUT/'runs'/f'{name}.json').read_text())['fold'])
    event, stored = pool_stats(sv), nocap.of(lay)   # (`event` means something only for `auto` models)
    w = (sv.water_frac * sv.n_valid).cumsum() / sv.n_valid.cumsum()   # pooled water share of the k water-richest tiles
    res = []
    for share in shares:
        n = len(sv) if share is None else int((w >= share).sum())   # the most tiles whose pooled water share is still >= share
        if n < 4: continue
        sub = sv.iloc[:n]
        land = event_land_stats(sub)
        own = land if norm_source(cfg.get('norm', 'layout'), lay) == 'land' else pool_stats(sub)   # the model's own rule before `at_water_share`
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')   # a scene past `MAX_WATER` falls back to the stored statistics, with a warning
            rule = norm_stats(lay, capped, cfg.get('norm', 'layout'), dict(pool_stats(sub, quantiles=True), land=land))   # the library's rule now
        row = dict(target_share=share, tiles=n, water_share=float(w.iloc[n - 1]), land_water=1 - land['share'], cap=capped.of(lay).get('water'),
                   dark_share_stored=dark_share(pool_stats(sub, quantiles=True), stored))
        for src, s in dict(own=own, rule=rule, event=event, stored=stored).items():
            row[src] = pooled(pred, sub, s['mean'], s['std'])['iou']
            row[f'{src}_mean_vv'], row[f'{src}_std_vv'] = s['mean'][0], s['std'][0]
        res.append(row); print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    return res

def adapt_bn(pred, xbs):
    "Re-estimate every BatchNorm layer's statistics of `pred`'s network (the predictor's own copy, in place) as the plain average over the batches `xbs`."
    bns = [m for m in pred.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns: m.reset_running_stats(); m.momentum = None; m.train()
    for xb in xbs: pred.logits(xb)
    for m in bns: m.eval()
    return pred

def bn_scores(name, chips):
    "Pooled water IoU at 0.5 of model `name` on its test `chips` under the library's rule, with the training BatchNorm statistics and with statistics re-estimated on each event's own tiles (AdaBN, labels unused)."
    model, cfg = load_model(protocol.OUT/'models'/name, device='cpu')
    cfg = dict(cfg, stats=protocol.water_stats(cfg, json.loads((protocol.OUT/'runs'/f'{name}.json').read_text())['fold'])[1], threshold=0.5)
    chips = with_norms(chips, cfg['stats'], cfg.get('norm', 'layout'))
    train = Predictor(model, cfg, precision='fp32')
    counts = {k: dict.fromkeys(COUNTS, 0) for k in ('train', 'event')}
    for ev, sub in chips.groupby('event', sort=False):
        batches = [(batch, torch.stack([chip_input(c, r) for r, c in batch])) for batch, _ in read_batches(sub, 4, progress=False) if batch]
        preds = dict(train=train, event=adapt_bn(Predictor(model, cfg, precision='fp32'), [xb for _, xb in batches]))
        for k, pred in preds.items():
            for batch, xb in batches:
                for (r, c), p in zip(batch, pred.probs(xb)):
                    if c.label is None: continue
                    p[~c.valid] = 0
                    for kk, v in confusion(p, c.label).items(): counts[k][kk] += v
    return {k: scores(**c) for k, c in counts.items()}

def permanent_water(row):
    "The ETCI chip's permanent-water map (`water_body_label`, 0/255 PNG) as booleans."
    f = Path(str(row.label).replace('/flood_label/', '/water_body_label/'))
    if not f.exists(): raise FileNotFoundError(f"{f}: no permanent-water map for chip {row.chip_id}")
    return read_raster(f, [1]).data[0] > 0

def perm_scores(name, chips):
    "Pooled water IoU on the ETCI test `chips` of the model `name` (library's rule, 0.5), the permanent-water map, and their union; the same for the fold's thresholds."
    model, cfg = load_model(protocol.OUT/'models'/name, device='cpu')
    fold = json.loads((protocol.OUT/'runs'/f'{name}.json').read_text())['fold']
    cfg['stats'] = protocol.water_stats(cfg, fold)[1]
    pred = Predictor(model, dict(cfg, threshold=0.5))
    base = protocol.baselines(fold)
    ts = {f'raw_{b}': base[f'raw_{b}']['threshold'] for b in ('vv', 'vh')}
    chips = with_norms(chips, cfg['stats'], cfg.get('norm', 'layout'))
    keys = ['model', 'perm', 'model_or_perm'] + [k + s for k in ts for s in ('', '_or_perm')]
    counts = {k: dict.fromkeys(COUNTS, 0) for k in keys}
    for batch, _ in read_batches(chips, 4, progress=False):
        batch = [(r, c) for r, c in batch if c.label is not None]
        if not batch: continue
        xb = torch.stack([chip_input(c, r) for r, c in batch])
        for (r, c), p in zip(batch, pred.probs(xb)):
            pw = permanent_water(r)
            maps = dict(model=p >= 0.5, perm=pw)
            maps['model_or_perm'] = maps['model'] | pw
            for k, t in ts.items():
                maps[k] = c.image[BAND_INDEX[k[4:]]] < t
                maps[k + '_or_perm'] = maps[k] | pw
            for k, m in maps.items():
                q = m.astype(np.float32); q[~c.valid] = 0
                for kk, v in confusion(q, c.label).items(): counts[k][kk] += v
    res = {k: scores(**c) for k, c in counts.items()}
    for k in ts: assert abs(res[k]['iou'] - base[k]['test_iou']) < 1e-3, (k, res[k]['iou'], base[k]['test_iou'])   # the same pixels as the protocol's baselines
    return res

SPLIT_D, SPLIT_SHARE, SPLIT_P = 2., (0.005, 0.9), 0.2

def gmm2(x, iters=100, bins=256):
    "Two-Gaussian mixture of the finite values `x` by EM on their histogram, started from Otsu's split: (weights, means, sds), dark component first."
    x = x[np.isfinite(x)]
    n, e = np.histogram(x, bins); c = (e[:-1] + e[1:]) / 2
    t = otsu_threshold(x)
    r = np.stack([c < t, c >= t]).astype(float)
    for _ in range(iters):
        w = (r * n).sum(1); w = np.maximum(w, 1e-9)
        mu = (r * n * c).sum(1) / w
        sd = np.sqrt(np.maximum((r * n * (c - mu[:, None]) ** 2).sum(1) / w, (e[1] - e[0]) ** 2))
        pi = w / w.sum()
        lik = pi[:, None] * np.exp(-0.5 * ((c - mu[:, None]) / sd[:, None]) ** 2) / sd[:, None]
        r = lik / np.maximum(lik.sum(0), 1e-300)
    o = np.argsort(mu)
    return pi[o], mu[o], sd[o]

def bimodal_split(x):
    "(threshold, Ashman's D, dark share) of a two-Gaussian mixture of `x`: the threshold (where the dark component's posterior is 0.5) is NaN unless the components are well apart (D > `SPLIT_D`) and the dark one holds `SPLIT_SHARE` of the pixels."
    x = x[np.isfinite(x)]
    pi, mu, sd = gmm2(x)
    d = float(np.sqrt(2) * (mu[1] - mu[0]) / np.sqrt((sd ** 2).sum()))
    if not (d > SPLIT_D and SPLIT_SHARE[0] <= pi[0] <= SPLIT_SHARE[1]): return float('nan'), d, float(pi[0])
    g = np.linspace(mu[0], mu[1], 1001)
    post = pi[0] / sd[0] * np.exp(-0.5 * ((g - mu[0]) / sd[0]) ** 2)
    post = post / (post + pi[1] / sd[1] * np.exp(-0.5 * ((g - mu[1]) / sd[1]) ** 2))
    return float(g[np.argmin(np.abs(post - 0.5))]), d, float(pi[0])

def event_splits(chips):
    "Each event's Otsu VH split over all its chips (an ETCI event is tiles of one scene, as `map_scene` would see it)."
    return {e: otsu_threshold(np.concatenate([(c := read_chip(r, with_label=False)).image[BAND_INDEX['vh']][c.valid] for r in g.itertuples(index=False)]))
            for e, g in chips.groupby('event')}

def otsu_rules(p, c, event_split):
    "(masks, the chip's Otsu VH split): the model at 0.5, and with the Otsu VH split of the chip (`model_at_otsu`) or of its event (`model_at_event_otsu`) where p > `SPLIT_P`."
    vh = c.image[BAND_INDEX['vh']]
    to = otsu_threshold(vh[c.valid])   # always defined, bimodal or not: on a dry chip it splits land, so only where the model is unsure
    return dict(model=p > 0.5, model_at_otsu=(p > 0.5) | (c.valid & (vh < to) & (p > SPLIT_P)),
                model_at_event_otsu=(p > 0.5) | (c.valid & (vh < event_split) & (p > SPLIT_P))), to

def split_scores(name, chips):
    "Per chip: the model at 0.5, the chip's own bimodal VH split alone, the two or'ed, and the model at 0.2 below the split (`SPLIT_P`)."
    model, cfg = load_model(protocol.OUT/'models'/name, device='cpu')
    pred, res, ev_split = Predictor(model, dict(cfg, threshold=0.5)), {}, event_splits(chips)
    for r, c, p in pred.chips(chips, progress=False):
        if p is None or c.label is None or not (c.label != IGNORE).any(): continue
        vh = c.image[BAND_INDEX['vh']]
        t, d, share = bimodal_split(vh[c.valid])
        below = c.valid & (vh < t) if np.isfinite(t) else np.zeros_like(c.valid)
        p = np.nan_to_num(p)
        masks, to = otsu_rules(p, c, ev_split[r.event])
        masks |= dict(split=below, model_or_split=(p > 0.5) | below, model_at_split=(p > 0.5) | (below & (p > SPLIT_P)),
                      model_or_vh22=(p > 0.5) | (c.valid & (vh < -22)), model_at_vh22=(p > 0.5) | (c.valid & (vh < -22) & (p > SPLIT_P)),
                      model_at_otsu_vh22=(p > 0.5) | (c.valid & (vh < min(to, -22.)) & (p > SPLIT_P)))
        res[r.chip_id] = {k: scores(**(cm := confusion(m, c.label))) | cm for k, m in masks.items()} | dict(threshold=t, ashman_d=d, dark_share=share, otsu_vh=float(to), event_otsu_vh=float(ev_split[r.event]))
    return res

def ensemble_name(members):
    "`ens_<recipe>_<fold>_s<seeds>_<budget>` of protocol models that differ only in their seed."
    ms = [protocol.RUN_NAME.match(m) for m in members]
    if not all(ms) or len({(m['recipe'], m['fold'], m['budget']) for m in ms}) != 1: raise ValueError(f'an ensemble takes seeds of one recipe, fold and budget: {members}')
    return f"ens_{ms[0]['recipe']}_{ms[0]['fold']}_s{''.join(m['seed'] for m in ms)}_{ms[0]['budget']}"

def ensemble_scores(members, chips):
    "Per chip: confusion counts of the members' mean water probability under `otsu_rules`. Each member standardises with its own training statistics (its seed drew its own validation chips), so each reads the chips itself."
    preds = [Predictor(*load_model(protocol.OUT/'models'/name, device='cpu')) for name in members]
    res, ev_split = {}, event_splits(chips)
    for outs in zip(*[p.chips(chips, progress=False) for p in preds]):
        r, c, _ = outs[0]
        if any(o[2] is None for o in outs) or c.label is None or not (c.label != IGNORE).any(): continue
        masks, _ = otsu_rules(np.mean([np.nan_to_num(o[2]) for o in outs], axis=0), c, ev_split[r.event])
        res[r.chip_id] = {k: scores(**(cm := confusion(m, c.label))) | cm for k, m in masks.items()}
    return res

@call_parse
def main(models:str, # protocol model names (bench/protocol/models/<name>), separated by spaces
         tta:bool=False, # TTA subsets on the model's held-out fold
         water:bool=False, # synthetic mostly-water scenes from the held-out fold's water-richest tiles
         bn:bool=False, # BatchNorm statistics re-estimated on the held-out event's own tiles (AdaBN)
         perm:bool=False, # the permanent-water map or'ed with the model and with the thresholds (ETCI folds)
         split:bool=False, # the chip's own bimodal VH split, alone, or'ed with the model and as a decision rule (dB folds)
         ensemble:bool=False, # each name is seeds of one recipe and fold joined by '+': their mean probability, at 0.5 and with the split rule
        ):
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    if ensemble:
        for group in models.split():
            members = group.split('+'); name = ensemble_name(members)
            if (OUT/f'{name}.json').exists(): continue
            fold = json.loads((protocol.OUT/'runs'/f'{members[0]}.json').read_text())['fold']
            r = ensemble_scores(members, protocol.fold_chips(fold)[1])
            if fold not in protocol.DB_FOLDS:   # an ETCI event is scored pooled: its tiles summed, not kept one by one
                r = {'pooled': {k: scores(**(cm := {c: sum(v[k][c] for v in r.values()) for c in COUNTS})) | cm for k in next(iter(r.values()))}}
            (OUT/f'{name}.json').write_text(json.dumps(dict(models=members, fold=fold, scores=r), indent=1, default=float))
            print(name, {c: round(v['model_at_otsu']['iou'], 3) for c, v in r.items()}, flush=True)
        return
    for name in models.split():
        fold = json.loads((protocol.OUT/'runs'/f'{name}.json').read_text())['fold']
        _, test = protocol.fold_chips(fold)
        for key, on, fn in (('tta', tta, tta_scores), ('bn', bn, bn_scores), ('perm', perm, perm_scores), ('split', split, split_scores)):
            if not on or (OUT/f'{name}_{key}.json').exists(): continue
            r = fn(name, test)
            (OUT/f'{name}_{key}.json').write_text(json.dumps(dict(model=name, fold=fold, scores=r), indent=1, default=float))
            print(name, key, {s: round(v['iou'], 4) for s, v in r.items() if 'iou' in v} if key != 'split' else
                  {c: {k: round(v['iou'], 3) for k, v in s.items() if isinstance(v, dict)} for c, s in list(r.items())[:20]}, flush=True)
        if water and not (OUT/f'{name}_water.json').exists():
            r = water_scores(name, test)
            (OUT/f'{name}_water.json').write_text(json.dumps(dict(model=name, fold=fold, scenes=r), indent=1, default=float))
