#!/usr/bin/env python
"""Generalisation protocol: can a recipe map a flood event it has never seen?

One run = one recipe, one fold, one seed, a fixed budget: CPU minutes (`--budget`), or optimizer steps (`--steps`, the
same training on any machine; a CPU budget is not: 8 CPU-min were ~240 steps with AVX512-BF16 and ~50 with AVX2 only). It trains from random initialisation (no ImageNet
weights offline) on the fold's training events only, validating on whole spatial blocks inside them
(`floodseg.data.spatial_split`), and scores the held-out event(s). The held-out event never chooses anything: the
model is the last one of the budget, its decision threshold is 0.5 or is chosen on the training events' validation
blocks, and its statistics come from the held-out event's own unlabelled pixels where the recipe's rule says so.

Folds (see FOLDS):
  nal  train ETCI nebraska                     -> test ETCI northal (356 tiles)
  neb  train ETCI northal                      -> test ETCI nebraska (198 tiles)
  s1   train ETCI nebraska + northal + STAC    -> test Sen1Floods11 (11 chips, 8 countries: another dataset,
                                                  another sensor processing, dB instead of 8-bit)
  db1, db2, db3  train ETCI + every other dB chip -> test 4-5 dB chips (Sen1Floods11 and STAC Overflow): every usable
                 labelled dB chip is held out exactly once (DB_FOLDS), scored chip by chip (`chip_scores`) beside fixed
                 VH < -22 dB, VV < -15 dB and Otsu (VV, VH) on the chip itself; `python bench/protocol.py --chips-only`
                 writes the per-chip tables (wins / ties / losses against the best of those thresholds) into PROTOCOL.md

Beside the model, each run reports the fold's threshold baselines, tuned on the training events only: one VV and one
VH threshold on raw values (on same-unit training chips), and one VV and one VH threshold on per-event standardised
values (`norm='auto'`). `best_threshold_iou` is the best of those four on the test data, which favours the baseline.

    OMP_NUM_THREADS=1 python bench/protocol.py --recipe auto --fold nal --seed 0 --budget 8
    OMP_NUM_THREADS=1 python bench/protocol.py --recipe auto --fold db1 --seed 0 --steps 50
    python bench/protocol.py --table   # summarise bench/protocol/runs/*.json into bench/PROTOCOL.md

Results: bench/protocol/runs/<recipe>_<fold>_s<seed>_b<budget>.json or ..._n<steps>.json (and the model under bench/protocol/models/).
"""
import json, os, re, resource, time, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from fastcore.script import call_parse
from fastai.vision.all import set_seed, Transform, Callback, store_attr
import floodseg
from floodseg.io import *
from floodseg.radiometry import *
from floodseg.data import *
from floodseg.learner import *
from floodseg.predict import *
from floodseg.metrics import *
from floodseg.baselines import *
from floodseg.calibrate import *
from floodseg.interpret import *
from floodseg.adapt import self_train
from floodseg.recipe import Recipe, train

OUT = Path(__file__).parent/'protocol'
NAL, NEB = 'northal_20190302t234651', 'nebraska_20170213t002121'
FOLDS = {
    'nal': dict(train={'etci2021': [NEB]}, test={'etci2021': [NAL]}),
    'neb': dict(train={'etci2021': [NAL]}, test={'etci2021': [NEB]}),
    's1':  dict(train={'etci2021': [NEB, NAL], 'stac_overflow': None}, test={'sen1floods11': None}),
}
# Every usable labelled dB chip held out once (Paraguay_34417 is all nodata, Ghana_83483 all ignore, awc01/ayt12 unlabelled):
# each fold holds wet and dry chips of both dB datasets; it trains on both ETCI events and every other dB chip.
DB_FOLDS = {'db1': ['India_900498', 'Somalia_699062', 'jja10', 'Ghana_53713'],
            'db2': ['Nigeria_812045', 'Mekong_333434', 'qxb32', 'Spain_6860600', 'awc00'],
            'db3': ['Pakistan_849790', 'USA_905409', 'pxs10', 'Ghana_97059']}
DB = {'etci2021': [NEB, NAL], 'sen1floods11': None, 'stac_overflow': None}
for _f, _held in DB_FOLDS.items(): FOLDS[_f] = dict(train=DB, test={'sen1floods11': None, 'stac_overflow': None}, held=_held)
MAIN_FOLDS = ['nal', 'neb', 's1']   # the folds of the main recipe table (the dB folds have their own, chip by chip)

class WeightEMA(Callback):
    "EXPERIMENT: exponential moving average of the weights and BatchNorm buffers; the fit ends with the average."
    order = 70
    def __init__(self, decay=0.98): store_attr()
    def before_fit(self): self.avg, self.n = {k: v.detach().clone() for k, v in self.model.state_dict().items()}, 0
    def after_step(self):
        self.n += 1; d = min(self.decay, (1 + self.n) / (10 + self.n))
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                if v.dtype.is_floating_point: self.avg[k].lerp_(v.detach(), 1 - d)
                else: self.avg[k].copy_(v)
    def after_fit(self): self.model.load_state_dict(self.avg)

# A recipe is flood_learner/sar_dataloaders options (jitter: `floodseg.data.RadiometricJitter` strength) plus the protocol's own (ema).
BASE = dict(arch='resnet18', cut=-4, last_cross=False, loss='wce', norm='auto', size=256, bs=8, lr=1e-3, jitter=0., max_rotate=10., ema=0., land=False)
RECIPES = {
    'old_default': dict(BASE, norm='layout'),        # the default before this protocol: training statistics per layout
    'auto':        dict(BASE),                       # 8-bit events standardised with their own statistics, dB with the training ones
    'scene':       dict(BASE, norm='scene'),         # every event/chip with its own statistics, dB included
    'auto_c3':     dict(BASE, cut=-3),               # deeper encoder (ResNet18 up to stage 3): 4x the receptive field
    'auto_r34c3':  dict(BASE, arch='resnet34', cut=-3),
    'auto_cedice': dict(BASE, loss='ce_dice'),
    'auto_ce':     dict(BASE, loss='ce'),
    'auto_jitter': dict(BASE, jitter=1.),
    'auto_c3_jitter': dict(BASE, cut=-3, jitter=1.),
    'auto_lr3':    dict(BASE, lr=3e-3),
    'auto_ema':    dict(BASE, ema=0.98),
    'auto_land':   dict(BASE, land=True),                # dB statistics over dry pixels: land near N(0, 1) in every layout
    'auto_ce_land': dict(BASE, loss='ce', land=True),
    'auto_ce_ema': dict(BASE, loss='ce', ema=0.98),
    'auto_ce_land_c3': dict(BASE, loss='ce', land=True, cut=-3),   # the default with ResNet18 up to stage 3
    'auto_ce_land_c3_jitter': dict(BASE, loss='ce', land=True, cut=-3, jitter=1.),
    'auto_ce_land_r34c3': dict(BASE, loss='ce', land=True, cut=-3, arch='resnet34'),
    'ownland_c3': dict(BASE, loss='ce', land=True, cut=-3, norm='ownland'),   # the default with 8-bit events standardised by their own land
    'auto_ce_land_c3_jitter2': dict(BASE, loss='ce', land=True, cut=-3, jitter=2.),   # twice the jitter: ±0.5 sd offset, ±30 % gain
    'cedice_land_c3_jitter': dict(BASE, loss='ce_dice', land=True, cut=-3, jitter=1.),   # the default with 0.5 CE + 0.5 Dice
    'auto_ce_land_c3_jitter_ema': dict(BASE, loss='ce', land=True, cut=-3, jitter=1., ema=0.98),   # the default with weight averaging
    'ref3_c3_jitter': dict(BASE, loss='ce', land=True, cut=-3, jitter=1., ref_water=0.03),   # the default, every 8-bit event standardised at 3 % water at most
    'wce_land_c3_jitter': dict(BASE, land=True, cut=-3, jitter=1.),   # the default with class-weighted CE (against under-predicted water)
    'auto_ce_land_c3_jitter_lr3': dict(BASE, loss='ce', land=True, cut=-3, jitter=1., lr=3e-3),   # the default at three times the learning rate
    'bal_c3_jitter': dict(BASE, loss='ce', land=True, cut=-3, jitter=1., balance=1.),   # the default, every dataset and event an equal share of each epoch
    'balwet_c3_jitter': dict(BASE, loss='ce', land=True, cut=-3, jitter=1., balance=1., wet=0.5),   # ... and wetter chips drawn more within their event
    'rough_c3_jitter': dict(BASE, loss='ce', land=True, cut=-3, jitter=1., rough=1.),   # the default with rough-water augmentation
    'balrough_c3_jitter': dict(BASE, loss='ce', land=True, cut=-3, jitter=1., rough=1., balance=1.),   # ... and balanced sampling
    'rough2_c3_jitter': dict(BASE, loss='ce', land=True, cut=-3, jitter=1., rough=2.),   # twice the rough-water brightening
    'balrough2_c3_jitter': dict(BASE, loss='ce', land=True, cut=-3, jitter=1., rough=2., balance=1.),   # ... with balanced sampling
    'balwetrough_c3_jitter': dict(BASE, loss='ce', land=True, cut=-3, jitter=1., rough=1., balance=1., wet=0.5),   # balrough with wetter chips drawn more
    'balroughhalf_c3_jitter': dict(BASE, loss='ce', land=True, cut=-3, jitter=1., rough=0.5, balance=1.),   # balrough at half the brightening
    'balprior_c3_jitter': dict(BASE, loss='ce', land=True, cut=-3, jitter=1., balance=1., prior=True),   # the default with the scene-split prior as a third input channel (branch `prior`)
    'baldb_c3': dict(BASE, loss='ce', land=True, cut=-3, db_aug=1., balance=1.),   # the default with dB-space augmentation in place of the jitter
}

LEVERS = {   # what each recipe tests, for the table of levers in PROTOCOL.md
    'old_default': 'the default before the protocol: every layout standardised with its training statistics',
    'auto': 'radiometry: 8-bit (ETCI) events standardised with their own statistics, dB with the training statistics',
    'scene': 'radiometry: every event or chip with its own statistics, dB included',
    'auto_c3': 'receptive field: ResNet18 encoder up to stage 3 (cut -3)',
    'auto_r34c3': 'capacity: ResNet34 encoder up to stage 3',
    'auto_cedice': 'loss: 0.5 CE + 0.5 Dice (the DrivenData benchmark)',
    'auto_ce': 'loss: plain cross-entropy instead of class-weighted',
    'auto_jitter': 'radiometry: random gain and offset per channel (dB-space augmentation)',
    'auto_c3_jitter': 'cut -3 with the jitter',
    'auto_lr3': 'learning rate 3e-3',
    'auto_ema': 'weight averaging (EMA 0.98): a cheap ensemble over the last steps',
    'auto_land': 'radiometry: dB statistics over the dry (labelled non-water) pixels, so land is near N(0, 1) in every layout',
    'auto_ce_land': 'plain cross-entropy with the land statistics',
    'auto_ce_ema': 'plain cross-entropy with weight averaging',
    'auto_ce_land_c3': 'receptive field at the inference budget: the default (auto_ce_land) with ResNet18 up to stage 3 (cut -3, 0.036 s per 256² tile in bf16)',
    'auto_ce_land_c3_jitter': 'radiometry: the default with random gain (±15 %) and offset (±0.25 sd) per channel and tile, the spread between events',
    'ownland_c3': "radiometry: the default with each 8-bit event standardised with its own land (`land_stats`: trimmed statistics that do not move with the event's water share)",
    'auto_ce_land_c3_jitter2': 'radiometry: the default with twice the jitter (±0.5 sd offset, ±30 % gain per channel and tile)',
    'cedice_land_c3_jitter': 'loss: the default with 0.5 CE + 0.5 Dice (the DrivenData benchmark) instead of CE, against under-predicted water',
    'ref3_c3_jitter': 'radiometry: the default with every 8-bit event, training ones too, standardised as if it had at most 3 % water (`at_water_share`; the shared events have 3.1 % and 8.0 % seen from their land), one scale for dry and wet events',
    'auto_ce_land_c3_jitter_ema': 'ensembles: the default with weight averaging (EMA 0.98 of the weights over the last ~50 steps), an ensemble that costs nothing at inference',
    'wce_land_c3_jitter': 'loss: the default with class-weighted cross-entropy (weights from the training water share), against under-predicted water',
    'auto_ce_land_c3_jitter_lr3': 'optimisation: the default at learning rate 3e-3 (one-cycle peak; the default 1e-3), more progress in a fixed budget',
    'bal_c3_jitter': 'sampling: the default with every dataset, and every event within it, an equal share of each epoch (`sample_weights(balance=1)`; on one-event folds it trains exactly as the default)',
    'balwet_c3_jitter': 'sampling: balanced as `bal_c3_jitter`, and within an event a chip drawn in proportion to (water share + 1 %) ** 0.5 (`wet=0.5`): a wetter prior',
    'rough_c3_jitter': 'augmentation: the default with the labelled water of half the training tiles brightened up to 2.5 sd in VV and 1 in VH with texture (`RoughWater`, `rough=1`), as wind-roughened water looks',
    'balrough_c3_jitter': 'augmentation and sampling: `rough_c3_jitter` with balanced sampling (`balance=1`)',
    'rough2_c3_jitter': 'augmentation: twice the rough-water brightening (`rough=2`: up to 5 sd in VV, 2 in VH; wind-roughened C-band water can be 10-15 dB brighter in VV than calm water). Chosen after `balrough_c3_jitter` lost jja10, whose water is as bright as its land in VV: its jja10 score is optimistic',
    'balrough2_c3_jitter': 'augmentation and sampling: `rough2_c3_jitter` with balanced sampling',
    'balwetrough_c3_jitter': 'sampling and augmentation: `balrough_c3_jitter` with wetter chips drawn more within their event (`wet=0.5`): against the dry prior that grows with longer training',
    'balroughhalf_c3_jitter': 'augmentation and sampling: `balrough_c3_jitter` at half the rough-water brightening (`rough=0.5`: water up to 1.25 sd brighter in VV, 0.5 in VH, on half the tiles)',
    'balprior_c3_jitter': "input: the default (`bal_c3_jitter`) with a third channel, the scene-split water prior, trained with it: tanh((s - VH) / 0.5 sd), s the Otsu split of each event's pooled VH (`prior=True`; built on the branch `prior`, `floodseg.radiometry.prior_channel`)",
    'baldb_c3': "augmentation: the default (`bal_c3_jitter`) with the standardised jitter replaced by dB-space augmentation (`db_aug=1`, `floodseg.data.DbAugment`): ±1 dB gain per band, a ±1 dB range ramp across the tile and extra speckle of 8-32 looks",
    'auto_ce_land_r34c3': 'capacity at the inference budget: the default with ResNet34 up to stage 3 (0.040 s per 256² tile in bf16; 12.9 M parameters, 25.8 MB in float16: over the 20 MB a shipped model may take)',
}

def fold_chips(fold):
    "(training chips, test chips) of a fold, from the shared data."
    def take(spec):
        parts = []
        for lay, events in spec.items():
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                t = chip_table(shared_data(lay))
            parts.append(t if events is None else t[t.event.isin(events)])
        return pd.concat(parts, ignore_index=True)
    f = FOLDS[fold]
    train, test = take(f['train']), take(f['test'])
    if 'held' in f:
        unknown = set(f['held']) - set(test.chip_id)
        if unknown: raise SystemExit(f"fold {fold}: chips {sorted(unknown)} are not in the shared data")
        train, test = train[~train.chip_id.isin(f['held'])], test[test.chip_id.isin(f['held'])]
    return train.reset_index(drop=True), test.reset_index(drop=True)

FIXED = {'vh_m22': ('vh', -22.), 'vv_m15': ('vv', -15.)}   # fixed dB thresholds (water below)
BASELINES = ['vh_m22', 'vv_m15', 'otsu_vv', 'otsu_vh']

def chip_scores(pred, test):
    "Per labelled test chip: scores (`floodseg.metrics.scores`) of the model at its threshold and of fixed VH < -22 dB, VV < -15 dB and Otsu on the chip's own VV and VH."
    out = {}
    for r, c, p in pred.chips(test, progress=False):
        if p is None or c.label is None or not (c.label != IGNORE).any(): continue
        m = {'model': confusion(np.nan_to_num(p), c.label, pred.threshold)}
        cuts = dict(FIXED) | {f'otsu_{b}': (b, otsu_threshold(c.image[BAND_INDEX[b]][c.valid])) for b in ('vv', 'vh')}
        for k, (b, t) in cuts.items(): m[k] = confusion(c.valid & (c.image[BAND_INDEX[b]] < t), c.label)
        out[r.chip_id] = {k: scores(**v) for k, v in m.items()} | dict(layout=r.layout, otsu={k: float(t) for k, (b, t) in cuts.items() if k.startswith('otsu')})
    return out

def zvalues(chips, stats):
    "Per-event standardised (`norm='auto'`) labelled pixels: ({band: values}, is_water)."
    nc = with_norms(chips, stats, 'auto')
    xs, ys = {'vv': [], 'vh': []}, []
    for r in nc.itertuples():
        if not isinstance(r.label, (str, Path)) or not (r.n_valid > 0): continue
        c = read_chip(r)
        ok = c.label != IGNORE
        if not ok.any(): continue
        z = standardise(c.image, *row_norm(r))
        for b, i in BAND_INDEX.items(): xs[b].append(z[i][ok])
        ys.append(c.label[ok] == WATER)
    return {b: np.concatenate(v) for b, v in xs.items()}, np.concatenate(ys)

def pooled_iou(x, y, t): return float(((x < t) & y).sum() / ((x < t) | y).sum())

def baselines(fold):
    "Thresholds tuned on the fold's training events and their pooled IoU on its test chips (cached)."
    f = OUT/f'baselines_{fold}.json'
    if f.exists(): return json.loads(f.read_text())
    train, test = fold_chips(fold)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        sv = survey_chips(train[train.label.notna()], progress=False)
    sv = sv[sv.problem.isna()]
    stats = sar_stats(sv)
    res = {}
    units = {LAYOUTS[l].units for l in test.layout}
    same = sv[sv.layout.map(lambda l: LAYOUTS[l].units).isin(units)]
    if len(same):
        xs, y = labelled_pixels(same, ['vv', 'vh'], progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            tsv = survey_chips(test[test.label.notna()], progress=False)
        xt, yt = labelled_pixels(tsv[tsv.problem.isna()], ['vv', 'vh'], progress=False)
        for b in ('vv', 'vh'):
            t = best_threshold(xs[b], y, b)
            res[f'raw_{b}'] = dict(threshold=t['threshold'], train_iou=t['iou'], test_iou=pooled_iou(xt[b], yt, t['threshold']),
                                   tuned_on=sorted(same.event.unique()))
    xs, y = zvalues(sv, stats)
    xt, yt = zvalues(test, stats)
    for b in ('vv', 'vh'):
        t = best_threshold(xs[b], y, b)
        res[f'z_{b}'] = dict(threshold=t['threshold'], train_iou=t['iou'], test_iou=pooled_iou(xt[b], yt, t['threshold']),
                             tuned_on=sorted(sv.event.unique()))
    res['best_threshold_iou'] = max(v['test_iou'] for v in res.values())
    OUT.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(res, indent=1))
    return res

GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)

def prior_threshold(cfg):
    "The threshold that undoes class-weighted CE's shift of the decision: weights [w0, w1] move p = 0.5 to w1 / (w0 + w1)."
    w = cfg.get('weights')
    return float(w[1] / (w[0] + w[1])) if cfg.get('loss', 'wce') == 'wce' and w else 0.5

def threshold_scores(ev, cfg):
    "Held-out IoU at a grid of thresholds (for the record: never used to choose) and at the prior-corrected threshold."
    cv = ev.hists['model'].curves()
    at = lambda t: cv.iloc[int(np.abs(cv.threshold.values - t).argmin())]
    tp = prior_threshold(cfg)
    p = at(tp)
    return dict(iou_by_threshold={f'{t:.2f}': float(at(t).iou) for t in GRID},
                model_pc=dict(iou=float(p.iou), precision=float(p.precision), recall=float(p.recall), threshold=tp))

def rescore(name):
    "Add `threshold_scores` to an earlier run's result, from its saved model (no retraining)."
    f = OUT/'runs'/f'{name}.json'
    r = json.loads(f.read_text())
    model, cfg = load_model(OUT/'models'/name, device='cpu')
    _, test = fold_chips(r['fold'])
    r.update(threshold_scores(evaluate_chips(Predictor(model, dict(cfg, threshold=0.5)), test, progress=False), cfg))
    f.write_text(json.dumps(r, indent=1, default=float))
    print(f"{name}: IoU at 0.5 {r['model']['iou']:.3f}, at the prior-corrected threshold {r['model_pc']['threshold']:.2f} {r['model_pc']['iou']:.3f}", flush=True)

_SURVEYS = {}   # fold -> (surveyed training chips, surveyed test chips): a batch of rescoring surveys each fold once

def fold_surveys(fold):
    "The fold's training and test chips, surveyed (cached)."
    if fold not in _SURVEYS:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            _SURVEYS[fold] = tuple(survey_chips(c, progress=False) for c in fold_chips(fold))
    return _SURVEYS[fold]

def without_water(stats):
    "`stats` without the training events' water share: the rule before `at_water_share`."
    return SARStats({k: {a: b for a, b in s.items() if a != 'water'} for k, s in stats.items()})

def training_water(cfg, train):
    "The model's stored statistics with the largest water share of the events of `train` (chips, surveyed or not), as `sar_dataloaders` stores it."
    nocap = without_water(cfg['stats'])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        sv = train if 'problem' in train else survey_chips(train, progress=False)
    return with_training_water(nocap, chip_norms(sv, nocap, cfg.get('norm', 'layout')))

def water_stats(cfg, fold):
    "(stored statistics without `water`, with it): models saved before `with_training_water` existed get it from the fold's training events, as training now does."
    has = any('water' in s for s in cfg['stats'].values())   # every chip of an event has its event's share, so the training blocks' maximum is the events'
    return without_water(cfg['stats']), SARStats(cfg['stats']) if has else training_water(cfg, fold_surveys(fold)[0])

def rescore_cap(name):
    "Score run `name` with and without `at_water_share` (the training events' water share as the most a test scene is standardised at): `model` = without, `model_cap` = with."
    f = OUT/'runs'/f'{name}.json'
    r = json.loads(f.read_text())
    model, cfg = load_model(OUT/'models'/name, device='cpu')
    nocap, cap = water_stats(cfg, r['fold'])
    _, test = fold_surveys(r['fold'])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        n0, n1 = (chip_norms(test, s, cfg.get('norm', 'layout')) for s in (nocap, cap))
    r['water_cap'] = {k: s.get('water') for k, s in cap.items()}
    if np.allclose(n0[NORM_COLUMNS].values.astype(float), n1[NORM_COLUMNS].values.astype(float), equal_nan=True):
        r['model_cap'] = dict(r['model'], same_statistics=True)   # the test event is no wetter than the training events: nothing changes
    else:
        for key, chips, st in (('model', n0, nocap), ('model_cap', n1, cap)):
            ev = evaluate_chips(Predictor(model, dict(cfg, stats=st, threshold=0.5)), chips, progress=False)
            p = ev.per_event().query("event == 'all' and method == 'model'").iloc[0]
            r[key] = dict(r['model'], iou=float(p.iou), precision=float(p.precision), recall=float(p.recall))
            if key == 'model':   # the other decision policies without the cap, as in every earlier run
                r.update(threshold_scores(ev, cfg))
                cv = ev.hists['model'].curves()
                at = cv.iloc[int(np.abs(cv.threshold.values - r['threshold_valid']).argmin())]
                r['model_tv'] = dict(iou=float(at.iou), precision=float(at.precision), recall=float(at.recall), threshold=r['threshold_valid'])
        r['model_cap']['same_statistics'] = False
    r['gain_over_best_threshold'] = r['model']['iou'] - r['baselines']['best_threshold_iou']
    f.write_text(json.dumps(r, indent=1, default=float))
    print(f"{name}: IoU {r['model']['iou']:.3f}, at the training events' water share {r['model_cap']['iou']:.3f}"
          + (" (same statistics)" if r['model_cap']['same_statistics'] else ''), flush=True)

def library_recipe(rc:dict, steps=None, budget=8.) -> Recipe:
    "A protocol recipe's options as the library's `floodseg.recipe.Recipe`: from random initialisation, the last weights, over `steps` optimizer steps or `budget` CPU minutes."
    return Recipe(arch=rc['arch'], cut=rc['cut'], last_cross=rc['last_cross'], pretrained=False, loss=rc['loss'], norm=rc['norm'], land_stats=rc.get('land', False),
                  size=rc['size'], bs=rc['bs'], balance=rc.get('balance', 0.), wet=rc.get('wet', 0.), max_rotate=rc['max_rotate'], jitter=rc['jitter'],
                  rough=rc.get('rough', 0.), db_aug=rc.get('db_aug', 0.), prior=rc.get('prior', False), lr=rc['lr'], keep='last', valid_pct=0.15, **(dict(steps=steps) if steps else dict(budget=budget)))

RUN_NAME = re.compile(r'(?P<recipe>.+)_(?P<fold>[a-z]+\d?)_s(?P<seed>\d+)_(?P<budget>[nb]\d+)$')   # `run`'s names (without `_a` self-training); an ensemble's `seed` is its seeds' digits

LIBRARY = {'default': 'bal_c3_jitter'}   # the library's recipes (`floodseg.recipe.RECIPES`) under their protocol names

def run(recipe, fold, seed, budget, tta=False, adapt=0., steps=None):
    name = f"{recipe}_{fold}_s{seed}_" + (f"n{steps}" if steps else f"b{budget:g}") + (f"_a{adapt:g}" if adapt else '')
    rc = RECIPES[recipe]
    r = library_recipe(rc, steps, budget)
    base = baselines(fold)
    train_chips, test = fold_chips(fold)
    t0, c0 = time.time(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        extra = {}
        if rc.get('ref_water') is not None:   # every own-statistics training event standardised at no more than this water share: the training statistics first
            s0 = sar_dataloaders(train_chips, valid_pct=r.valid_pct, bs=r.bs, size=r.size, norm=r.norm, land_stats=r.land_stats, seed=seed, progress=False).stats
            extra['stats'] = SARStats({lay: dict(v, water=rc['ref_water']) for lay, v in s0.items()})
        learn = train(r, train_chips, seed=seed, path=OUT/'models', progress=False, cbs=[WeightEMA(rc['ema'])] if rc.get('ema') else None, **extra)   # the library's one training path
    dls, budget_cb = learn.dls, learn.floodseg_budget
    train_cpu, train_wall = (time.process_time() - c0) / 60, (time.time() - t0) / 60
    model, cfg = learn.model.eval(), dict(learn.floodseg_config)
    cfg['stats'] = SARStats(cfg['stats'])
    # decision threshold chosen on the training events' validation blocks (never on the test event)
    vchips = dls.survey[dls.survey.is_valid]
    hv, cv = LogitHist(), dict.fromkeys(COUNTS, 0)
    pred = Predictor(model, cfg)
    for r, c, p in pred.chips(vchips, progress=False):
        hv.add(p, c.label)
        for k, v in confusion(np.nan_to_num(p), c.label).items(): cv[k] += v
    thr_valid, valid_iou = choose_threshold(hv), scores(**cv)['iou']
    res = dict(name=name, recipe=recipe, options=rc, fold=fold, seed=seed, budget_cpu_min=None if steps else budget, budget_steps=steps, steps=budget_cb.steps,
               epochs=len(learn.recorder.values), train_tiles=len(dls.train_ds), valid_tiles=len(dls.valid_ds),
               train_cpu_min=train_cpu, train_wall_min=train_wall, torch_threads=torch.get_num_threads(),
               threshold_valid=thr_valid, valid_iou_at_05=valid_iou, baselines=base, floodseg_version=floodseg.__version__,
               history=[dict(zip(learn.recorder.metric_names[1:-1], map(float, v))) for v in learn.recorder.values])
    ev = evaluate_chips(Predictor(model, dict(cfg, threshold=0.5)), test, tta=tta, progress=False)
    res.update(threshold_scores(ev, cfg))
    if 'held' in FOLDS[fold]: res['per_chip'] = chip_scores(Predictor(model, dict(cfg, threshold=0.5)), test)
    evt = ev.per_event()
    for m in ev.hists:
        p = evt.query("event == 'all' and method == @m").iloc[0]
        res[m] = dict(iou=float(p.iou), precision=float(p.precision), recall=float(p.recall), threshold=0.5,
                      per_event=evt.query("method == @m and event != 'all'").set_index('event').iou.to_dict(), seconds_per_chip=ev.seconds[m])
        cv = ev.hists[m].curves()
        at = cv.iloc[int(np.abs(cv.threshold.values - thr_valid).argmin())]   # the same pixels at the validation blocks' threshold
        res[m + '_tv'] = dict(iou=float(at.iou), precision=float(at.precision), recall=float(at.recall), threshold=thr_valid)
    if adapt:   # self-training on the test event's tiles, without their labels; scored with them afterwards
        t1 = time.process_time()
        net, acfg = self_train(model, cfg, test.drop(columns='label'), budget=adapt, seed=seed)
        ev = evaluate_chips(Predictor(net, dict(acfg, threshold=0.5)), test, progress=False)
        p = ev.per_event().query("event == 'all' and method == 'model'").iloc[0]
        res['model_adapted'] = dict(iou=float(p.iou), precision=float(p.precision), recall=float(p.recall), threshold=0.5,
                                    adapted=acfg['adapted'][-1], cpu_min=(time.process_time() - t1) / 60)
        print(f"{name}: self-trained {adapt} CPU-min on the test event: IoU {res['model']['iou']:.3f} -> {p.iou:.3f}", flush=True)
    res['gain_over_best_threshold'] = res['model']['iou'] - base['best_threshold_iou']
    res['peak_rss_gb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    (OUT/'models').mkdir(parents=True, exist_ok=True)
    save_model(learn, OUT/'models'/name, overwrite=True)
    (OUT/'runs').mkdir(parents=True, exist_ok=True)
    (OUT/'runs'/f'{name}.json').write_text(json.dumps(res, indent=1, default=float))
    print(f"{name}: IoU {res['model']['iou']:.3f} (threshold {thr_valid:.2f} from the validation blocks: {res['model_tv']['iou']:.3f}); "
          f"best tuned threshold {base['best_threshold_iou']:.3f}; {res['steps']} steps, {res['epochs']} epochs, "
          f"{train_cpu:.1f} CPU-min, {train_wall:.1f} min", flush=True)
    rescore_cap(name)
    return json.loads((OUT/'runs'/f'{name}.json').read_text())

def adapt_run(name, minutes, lo=0.1, hi=0.9, lr=1e-4):
    "Self-train the saved model of run `name` on its fold's test event (without labels) for `minutes` CPU minutes and score it."
    r0 = json.loads((OUT/'runs'/f'{name}.json').read_text())
    model, cfg = load_model(OUT/'models'/name, device='cpu')
    cfg['stats'] = water_stats(cfg, r0['fold'])[1]   # the library's rule now: a wetter test event at the training events' water share
    before = r0.get('model_cap', r0['model'])
    _, test = fold_chips(r0['fold'])
    c0 = time.process_time()
    net, acfg = self_train(model, cfg, test.drop(columns='label'), budget=minutes, lr=lr, lo=lo, hi=hi, seed=r0['seed'])
    cpu = (time.process_time() - c0) / 60
    ev = evaluate_chips(Predictor(net, dict(acfg, threshold=0.5)), test, progress=False)
    p = ev.per_event().query("event == 'all' and method == 'model'").iloc[0]
    res = dict(run=name, recipe=r0['recipe'], fold=r0['fold'], seed=r0['seed'], budget_cpu_min=r0['budget_cpu_min'], adapt_cpu_min=minutes,
               lo=lo, hi=hi, lr=lr, before=before, water_cap='model_cap' in r0, after=dict(iou=float(p.iou), precision=float(p.precision), recall=float(p.recall)),
               adapted=acfg['adapted'][-1], cpu_min=cpu, best_threshold_iou=r0['baselines']['best_threshold_iou'])
    (OUT/'adapt').mkdir(parents=True, exist_ok=True)
    tag = f"{name}_a{minutes:g}" + ('' if (lo, hi, lr) == (0.1, 0.9, 1e-4) else f"_lo{lo:g}_hi{hi:g}_lr{lr:g}")
    (OUT/'adapt'/f'{tag}.json').write_text(json.dumps(res, indent=1, default=float))
    print(f"{tag}: IoU {before['iou']:.3f} -> {p.iou:.3f} (precision {p.precision:.3f}, recall {p.recall:.3f}); "
          f"pseudo-labelled {res['adapted']['pseudo_labelled_share']:.1%}, {res['adapted']['steps']} steps", flush=True)
    return res

def _fmt(m, sd, n): return f"{m:.3f} ± {sd:.3f} ({n})" if n > 1 else f"{m:.3f} (1)"

# Recipes that differ from another only in how dB data is standardised: on the ETCI-only folds they train the same
# network on the same data, so those folds are not run again and the other recipe's runs stand in (marked †).
SAME_ON_ETCI = {'auto_land': 'auto', 'scene': 'auto', 'auto_ce_land': 'auto_ce', 'bal_c3_jitter': 'auto_ce_land_c3_jitter',
                'balrough_c3_jitter': 'rough_c3_jitter', 'balrough2_c3_jitter': 'rough2_c3_jitter'}   # balance: uniform weights on one event, so the same training there

def budget_label(r:dict) -> str:
    "A run's budget as the tables name it: '8 CPU-min' (process CPU time, `CPUBudget`) or '50 steps' (`StepBudget`, the same on any machine)."
    return f"{r['budget_steps']} steps" if r.get('budget_steps') else f"{r['budget_cpu_min']:g} CPU-min"

def budget_key(label:str):
    "Sort budgets: CPU minutes first, then steps, each by size."
    n, unit = label.split(' ', 1)
    return (unit == 'steps', float(n))

def runs_frame(runs_dir=None):
    "One row per run: recipe, fold, seed, budget, held-out IoU at 0.5 / validation threshold / prior-corrected threshold, cost."
    runs = [json.loads(f.read_text()) for f in sorted(Path(runs_dir or OUT/'runs').glob('*.json'))]
    return pd.DataFrame([dict(recipe=r['recipe'], fold=r['fold'], seed=r['seed'], budget=budget_label(r), iou=r['model']['iou'],
                              iou_tv=r['model_tv']['iou'], iou_pc=r.get('model_pc', {}).get('iou', np.nan),
                              iou_cap=r.get('model_cap', {}).get('iou', np.nan), recall_cap=r.get('model_cap', {}).get('recall', np.nan), thr=r['baselines']['best_threshold_iou'],
                              precision=r['model']['precision'], recall=r['model']['recall'], epochs=r['epochs'], steps=r['steps'],
                              cpu=r['train_cpu_min'], rss=r['peak_rss_gb']) for r in runs])

DEFAULT = 'auto_ce_land_c3_jitter'   # the recipe that ships (`bench/ship_model.py`)

def recipe_runs(gb, rec):
    "The runs of recipe `rec` among `gb` (one budget), with its `SAME_ON_ETCI` stand-in's runs on each ETCI fold it has none of (column `stand_in`)."
    g = gb[gb.recipe == rec].assign(stand_in=False)
    if rec not in SAME_ON_ETCI: return g
    missing = [f for f in ('nal', 'neb') if not (g.fold == f).any()]
    return pd.concat([g, gb[(gb.recipe == SAME_ON_ETCI[rec]) & gb.fold.isin(missing)].assign(stand_in=True)])

def paired_gain(gb, rec, policy, ref=DEFAULT):
    "Mean, standard error and count of `rec` minus `ref` over the (fold, seed) pairs both have: the same folds and seeds, so the folds' spread cancels."
    a, b = [{(r.fold, r.seed): getattr(r, policy) for r in recipe_runs(gb, x).itertuples()} for x in (rec, ref)]
    d = np.array([a[k] - b[k] for k in a if k in b and np.isfinite(a[k] - b[k])])
    return (d.mean(), d.std(ddof=1) / np.sqrt(len(d)), len(d)) if rec != ref and len(d) > 1 else None

def recipe_table(df, budget, policy='iou'):
    "Per recipe at `budget`: each fold's held-out IoU (mean, sd, n; under threshold `policy`: iou = 0.5, iou_tv, iou_pc), mean over folds, worst gain."
    base = {f: json.loads((OUT/f'baselines_{f}.json').read_text())['best_threshold_iou'] for f in MAIN_FOLDS}
    gb, rows = df[(df.budget == budget) & df.fold.isin(MAIN_FOLDS)], []
    for rec, g in gb.groupby('recipe'):
        row, runs = dict(recipe=rec), recipe_runs(gb, rec)
        for f in MAIN_FOLDS:
            v = runs[runs.fold == f]
            row[f] = (v[policy].mean(), v[policy].std(), len(v), v.stand_in.any()) if len(v) else None
        full = all(row[f] for f in MAIN_FOLDS)
        row['mean'] = np.mean([row[f][0] for f in MAIN_FOLDS]) if full else np.nan
        row['worst_gain'] = min(row[f][0] - base[f] for f in MAIN_FOLDS) if full else np.nan
        row['paired'] = paired_gain(gb, rec, policy)
        row.update(epochs=g.epochs.mean(), cpu=g.cpu.mean(), rss=g.rss.max(), n_runs=len(g))
        rows.append(row)
    return pd.DataFrame(rows).sort_values('mean', ascending=False, na_position='last'), base

def recipe_markdown(df, budget, policy='iou', cost=None):
    "The recipe table as Markdown, with the threshold baselines as the last row."
    t, base = recipe_table(df, budget, policy)
    cost = cost if cost is not None else (json.loads((OUT/'cost.json').read_text()) if (OUT/'cost.json').exists() else {})
    cell = lambda v: '–' if v is None else (_fmt(*v[:3]) + (' †' if v[3] else ''))
    lines = ["| recipe | " + " | ".join(f"{f}" for f in MAIN_FOLDS) + " | mean | worst gain over the threshold | paired gain over the default | epochs | s per 256² tile (bf16) |",
             "|---|" + "---|" * (len(MAIN_FOLDS) + 5)]
    pg = lambda v: '–' if v is None else f"{v[0]:+.3f} ± {v[1]:.3f} ({v[2]})"
    for r in t.itertuples():
        c = cost.get(r.recipe, {})
        lines.append(f"| {r.recipe} | " + " | ".join(cell(getattr(r, f)) for f in MAIN_FOLDS) +
                     (f" | **{r.mean:.3f}** | {r.worst_gain:+.3f} |" if np.isfinite(r.mean) else " | – | – |") + f" {pg(r.paired)} | {r.epochs:.0f} | {c.get('bf16_s_per_256', float('nan')):.3f} |")
    lines.append("| *best tuned threshold* | " + " | ".join(f"{base[f]:.3f}" for f in MAIN_FOLDS) + f" | {np.mean(list(base.values())):.3f} | | | | |")
    return "\n".join(lines)

TIE = 0.02   # a model and a threshold within this much IoU (or false-water share, on a chip without water) tie

def chip_frame(runs_dir=None):
    "One row per (run, held-out dB chip): recipe, fold, seed, chip, its water share, the model's IoU, recall and false-water share, and each baseline's."
    rows = []
    for f in sorted(Path(runs_dir or OUT/'runs').glob('*.json')):
        r = json.loads(f.read_text())
        for chip, s in r.get('per_chip', {}).items():
            row = dict(recipe=r['recipe'], fold=r['fold'], seed=r['seed'], budget=budget_label(r), steps=r['steps'], chip=chip, water=s['model']['water_share'])
            for m in ['model'] + BASELINES: row |= {f'{m}_iou': s[m]['iou'], f'{m}_recall': s[m]['recall'], f'{m}_fw': s[m]['pred_water_share']}
            rows.append(row)
    return pd.DataFrame(rows)

def verdict(d, b, tie=TIE):
    "+1, 0, -1: a gain `d` of the model over the best threshold's score `b` is a win, a tie or a loss."
    return 0 if abs(d) <= tie else int(np.sign(d))

def chip_table_md(cf, recipe):
    "Per held-out dB chip for `recipe` (mean over its seeds): the model's IoU and recall, the thresholds', the best of them, and the verdict."
    g = cf[cf.recipe == recipe]
    lines = [f"### {recipe}", "", "| fold | chip | water share | seeds | model IoU | model recall | VH < -22 | VV < -15 | Otsu VV | Otsu VH | best threshold | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (fold, chip), c in g.groupby(['fold', 'chip']):
        m = c.mean(numeric_only=True)
        if m.water > 0:
            best = max(BASELINES, key=lambda k: m[f'{k}_iou'])
            v = verdict(m.model_iou - m[f'{best}_iou'], 0)
            cells = [f"{m.model_iou:.3f} ± {c.model_iou.std():.3f}" if len(c) > 1 else f"{m.model_iou:.3f}", f"{m.model_recall:.3f}"] + \
                    [f"{m[f'{k}_iou']:.3f}" for k in BASELINES] + [f"{m[f'{best}_iou']:.3f} ({best})"]
        else:   # no labelled water: the share of valid pixels called water, lower is better
            best = min(BASELINES, key=lambda k: m[f'{k}_fw'])
            v = verdict(m[f'{best}_fw'] - m.model_fw, 0)
            cells = [f"false water {m.model_fw:.3f}", "–"] + [f"fw {m[f'{k}_fw']:.3f}" for k in BASELINES] + [f"fw {m[f'{best}_fw']:.3f} ({best})"]
        lines.append(f"| {fold} | {chip} | {m.water:.3f} | {len(c)} | " + " | ".join(cells) + f" | {['loss', 'tie', 'win'][v + 1]} |")
    return lines + [""]

def chip_summary(cf):
    "Per recipe over the held-out dB chips: wins / ties / losses against the best threshold on each chip (seed means, and every chip-seed), mean IoU and recall of the wet chips, paired gain over the default."
    rows = []
    for (rec, budget), g in cf.groupby(['recipe', 'budget']):
        m = g.groupby(['fold', 'chip']).mean(numeric_only=True)
        def tally(t):
            wet, dry = t[t.water > 0], t[t.water == 0]
            best_iou = wet[[f'{k}_iou' for k in BASELINES]].max(axis=1)
            best_fw = dry[[f'{k}_fw' for k in BASELINES]].min(axis=1)
            v = [verdict(d, 0) for d in wet.model_iou - best_iou] + [verdict(d, 0) for d in best_fw - dry.model_fw]
            return f"{v.count(1)} / {v.count(0)} / {v.count(-1)}"
        wet = m[m.water > 0]
        d = g.merge(cf[(cf.recipe == DEFAULT) & (cf.budget == budget)], on=['fold', 'seed', 'chip'], suffixes=('', '_d'))
        d = d[d.water > 0]
        pg = (d.model_iou - d.model_iou_d)
        rows.append(dict(recipe=rec, budget=budget, seeds=g.seed.nunique(), chips=len(m), steps=g.steps.mean(), wtl=tally(m), wtl_all=tally(g),
                         iou=wet.model_iou.mean(), recall=wet.model_recall.mean(), best_thr=wet[[f'{k}_iou' for k in BASELINES]].max(axis=1).mean(),
                         paired='–' if rec == DEFAULT or len(pg) < 2 else f"{pg.mean():+.3f} ± {pg.std(ddof=1) / np.sqrt(len(pg)):.3f} ({len(pg)})"))
    return pd.DataFrame(rows).sort_values(['budget', 'iou'], ascending=[True, False], key=lambda c: c.map(budget_key) if c.name == 'budget' else c)

RULES = {'model': 'the model at 0.5', 'model_or_vh22': 'or VH < -22 dB', 'model_at_vh22': 'VH < -22 dB where p > 0.2',
         'model_or_split': "or the chip's bimodal VH split", 'model_at_split': 'the split where p > 0.2', 'split': 'the bimodal split alone',
         'model_at_otsu': "the chip's Otsu VH split where p > 0.2", 'model_at_otsu_vh22': 'the lower of Otsu VH and -22 dB where p > 0.2'}

def rule_frame(cf=None):
    "`chip_frame` rows of every run with a `bench/infer_levers.py --split` result, once per decision rule, with the model's IoU, recall and false water under that rule (column `rule`)."
    cf = chip_frame() if cf is None else cf
    d = OUT/'infer'
    rs = [json.loads(f.read_text()) for f in sorted(d.glob('*_split.json'))] if d.exists() else []
    rows = []
    for r in rs:
        if r['fold'] not in DB_FOLDS: continue   # the ETCI folds' rules: `etci_rule_markdown`
        run = json.loads((OUT/'runs'/f"{r['model']}.json").read_text())
        for chip, sc in r['scores'].items():
            base = cf[(cf.recipe == run['recipe']) & (cf.fold == run['fold']) & (cf.seed == run['seed']) & (cf.chip == chip) & (cf.budget == budget_label(run))].iloc[0]
            for rule in RULES:
                if rule in sc: rows.append(base.to_dict() | dict(rule=rule, model_iou=sc[rule]['iou'], model_recall=sc[rule]['recall'], model_fw=sc[rule]['pred_water_share']))
    return pd.DataFrame(rows)

def rule_markdown(cf=None):
    "Decision rules on the dB folds (`bench/infer_levers.py --split`, the same saved models): wins / ties / losses against the best threshold per rule and recipe."
    rf = rule_frame(cf)
    if not len(rf): return []
    lines = ["## Decision rules on the dB folds (`bench/infer_levers.py --split`; the same saved models, no retraining)", "",
             "The model's water at 0.5 combined with a threshold applied to the chip itself: or'ed with fixed VH < -22 dB; VH < -22 dB taken only where "
             "the model gives at least 0.2; the same two with the chip's own bimodal VH split (a two-Gaussian mixture, kept where Ashman's D > 2 and the dark "
             "component holds 0.5-90 % of the pixels: 3 of the 13 chips); the split alone. Rules fixed a priori, none tuned on a test chip. W / T / L as above, seed means.", "",
             "| recipe | budget | seeds | rule | W / T / L | mean IoU, wet chips | mean recall, wet chips |", "|---|---|---|---|---|---|---|"]
    for (rec, budget, rule), g in rf.groupby(['recipe', 'budget', 'rule'], sort=False):
        s = chip_summary(g.assign(recipe=rec)).iloc[0]
        lines.append(f"| {rec} | {budget} | {s.seeds} | {rule}: {RULES[rule]} | {s.wtl} | {s.iou:.3f} | {s.recall:.3f} |")
    return lines + [""]

def etci_rule_markdown():
    "The split rule on the ETCI folds (`bench/infer_levers.py --split` on their saved models; each 256² tile its own scene): pooled IoU and recall against the model at 0.5."
    rows = []
    for f in sorted((OUT/'infer').glob('*_split.json')):
        r = json.loads(f.read_text())
        if r['fold'] not in ('nal', 'neb'): continue
        run = json.loads((OUT/'runs'/f"{r['model']}.json").read_text())
        for rule in ('model', 'model_at_otsu', 'model_at_event_otsu'):
            if rule not in next(iter(r['scores'].values())): continue
            c = {k: sum(sc[rule][k] for sc in r['scores'].values()) for k in ('tp', 'fp', 'fn')}
            rows.append(dict(recipe=run['recipe'], fold=r['fold'], seed=run['seed'], budget=budget_label(run), rule=rule,
                             iou=c['tp'] / (c['tp'] + c['fp'] + c['fn']), recall=c['tp'] / (c['tp'] + c['fn'])))
    if not rows: return []
    df = pd.DataFrame(rows).groupby(['recipe', 'budget', 'fold', 'rule']).agg(n=('seed', 'size'), iou=('iou', 'mean'), recall=('recall', 'mean')).reset_index()
    lines = ["## The split rule on the ETCI folds (`bench/infer_levers.py --split`; each 256² tile is its own scene)", "",
             "Pooled water IoU and recall of the held-out event at 0.5; with the tile's own Otsu VH split where p > 0.2 (`model_at_otsu`, as `evaluate_chips` does); and with the event's Otsu VH split over all its tiles "
             "where p > 0.2 (`model_at_event_otsu`: the event is tiles of one scene, the split `map_scene` would compute). Seed means.", "",
             "| recipe | budget | fold | seeds | IoU at 0.5 | recall at 0.5 | IoU, tile split | recall, tile split | IoU, event split | recall, event split |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (rec, b, fold), g in df.groupby(['recipe', 'budget', 'fold'], sort=False):
        g = g.set_index('rule')
        m, o = g.loc['model'], g.loc['model_at_otsu']
        e = g.loc['model_at_event_otsu'] if 'model_at_event_otsu' in g.index else None
        lines.append(f"| {rec} | {b} | {fold} | {m.n} | {m.iou:.3f} | {m.recall:.3f} | {o.iou:.3f} | {o.recall:.3f} | " + (f"{e.iou:.3f} | {e.recall:.3f} |" if e is not None else "– | – |"))
    return lines + [""]

def lever_markdown(budget='200 steps', ref=LIBRARY['default'], rule='model_at_otsu'):
    "The levers against the shipped recipe at one budget, with the split rule: per recipe and seed set, W / T / L of the wet dB chips (seed means), their mean IoU and recall, the paired gain over `ref` on the same chip-seeds, and the ETCI folds under the library's rule (`model_cap`)."
    rf = rule_frame()
    rf = rf[(rf.budget == budget) & (rf.rule == rule) & (rf.water > 0)]
    if not len(rf): return []
    B = [f'{k}_iou' for k in BASELINES]
    runs = runs_frame()
    lines = [f"## The levers against the shipped recipe ({budget}; the split rule: the chip's Otsu VH split where p > 0.2)", "",
             "W / T / L: the wet held-out dB chips (seed means) against the best of the four thresholds on each chip, a tie within 0.02. Paired gain: the lever minus "
             f"`{ref}` on the same chip and seed. ETCI: the held-out event's pooled IoU (recall) at 0.5 under the library's statistics rule, mean over seeds (n).", "",
             "| recipe | seeds | W / T / L, wet dB chips | mean IoU (recall), wet dB chips | paired gain over the shipped recipe | ETCI nal | ETCI neb |", "|---|---|---|---|---|---|---|"]
    def etci(rec, fold, seeds):
        at = (runs.fold == fold) & (runs.budget == budget)
        g = runs[at & (runs.recipe == rec)]
        if not len(g): g = runs[at & (runs.recipe == SAME_ON_ETCI.get(rec, rec))]   # a balanced recipe trains as its stand-in on a one-event fold
        s = g[g.seed.isin(seeds)]
        g = s if len(s) else g   # the seeds that ran, when not all of `seeds` did
        if not len(g): return '–'
        return f"{g.iou_cap.mean():.3f} ({g.recall_cap.mean():.3f}; {len(g)})"
    for rec, g in rf.groupby('recipe'):
        for seeds in ([0], [0, 1, 2]):
            h = g[g.seed.isin(seeds)]
            if h.groupby(['fold', 'chip']).seed.nunique().min() < len(seeds) or h.fold.nunique() < 3: continue
            m = h.groupby(['fold', 'chip']).mean(numeric_only=True)
            v = [verdict(d, 0) for d in m.model_iou - m[B].max(axis=1)]
            d = h.merge(rf[rf.recipe == ref], on=['fold', 'seed', 'chip'], suffixes=('', '_r'))
            pg = d.model_iou - d.model_iou_r
            paired = '–' if rec == ref else f"{pg.mean():+.3f} ± {pg.std(ddof=1) / np.sqrt(len(pg)):.3f} ({len(pg)})"
            lines.append(f"| {rec} | {', '.join(map(str, seeds))} | {v.count(1)} / {v.count(0)} / {v.count(-1)} | {m.model_iou.mean():.3f} ({m.model_recall.mean():.3f}) | {paired} | "
                         f"{etci(rec, 'nal', seeds)} | {etci(rec, 'neb', seeds)} |")
    return lines + [""]

def ensemble_markdown(budget='200 steps', rule='model_at_otsu'):
    "Seed ensembles of the dB and ETCI folds (`bench/infer_levers.py --ensemble`): W / T / L and mean IoU (recall) of the wet dB chips for the members' mean probability with the split rule, beside the same seeds one at a time (seed means, `lever_markdown`), and the ETCI folds' pooled IoU (recall) at 0.5."
    rows = []
    for f in sorted((OUT/'infer').glob('ens_*.json')):
        m = RUN_NAME.match(f.stem.removeprefix('ens_'))
        if m and m['budget'] == f"n{budget.split()[0]}": rows.append(dict(recipe=m['recipe'], fold=m['fold'], seeds=m['seed'], scores=json.loads(f.read_text())['scores']))
    rf = rule_frame()
    rf = rf[(rf.budget == budget) & (rf.rule == rule) & (rf.water > 0)]
    if not rows or not len(rf): return []
    B = [f'{k}_iou' for k in BASELINES]
    best, water = rf.groupby('chip')[B].first().max(axis=1), rf.groupby('chip').water.first()
    lines = [f"## Seed ensembles ({budget}; `bench/infer_levers.py --ensemble`)", "",
             "The mean water probability of two or three models of one recipe and fold that differ only in their seed, with the split rule, against the best of the four "
             "thresholds on each wet held-out dB chip (a tie within 0.02), beside the same seeds scored one at a time (seed means of their IoU, as in the table above). "
             "Inference costs as many forward passes as members (0.036 s per 256² tile in bf16 each). ETCI: the held-out event's pooled IoU (recall) at 0.5 "
             "(for a balanced recipe, the seeds of its stand-in on a one-event fold, as above).", "",
             "| recipe | seeds | W / T / L, ensemble | mean IoU (recall), ensemble | W / T / L, one model | mean IoU (recall), one model | ETCI nal, ensemble | ETCI neb, ensemble |",
             "|---|---|---|---|---|---|---|---|"]
    def tally(iou): v = [verdict(d, 0) for d in iou - best[iou.index]]; return f"{v.count(1)} / {v.count(0)} / {v.count(-1)}"
    def etci(rec, fold, seeds):
        r = next((r for r in rows if r['recipe'] in (rec, SAME_ON_ETCI.get(rec)) and r['fold'] == fold and r['seeds'] == seeds), None)
        if r is None: return '–'
        s = r['scores']['pooled']['model']   # an ETCI fold's ensemble is stored pooled
        return f"{s['iou']:.3f} ({s['recall']:.3f})"
    db = pd.DataFrame([dict(recipe=r['recipe'], seeds=r['seeds'], chip=c, iou=v[rule]['iou'], recall=v[rule]['recall'])
                       for r in rows if r['fold'] in DB_FOLDS for c, v in r['scores'].items() if water.get(c, 0) > 0])
    for (rec, seeds), g in db.groupby(['recipe', 'seeds']):
        if len(g) < water.gt(0).sum(): continue   # every wet chip, all three folds
        one = rf[(rf.recipe == rec) & rf.seed.isin([int(x) for x in seeds])].groupby('chip')[['model_iou', 'model_recall']].mean()
        g = g.set_index('chip')
        lines.append(f"| {rec} | {', '.join(seeds)} | {tally(g.iou)} | {g.iou.mean():.3f} ({g.recall.mean():.3f}) | {tally(one.model_iou)} | "
                     f"{one.model_iou.mean():.3f} ({one.model_recall.mean():.3f}) | {etci(rec, 'nal', seeds)} | {etci(rec, 'neb', seeds)} |")
    return lines + [""]

def chip_markdown(cf=None, per_chip:bool=True):
    "The dB folds' sections of PROTOCOL.md: the summary per recipe and (`per_chip`) the per-chip table of each."
    cf = chip_frame() if cf is None else cf
    if not len(cf): return []
    s = chip_summary(cf)
    lines = ["## dB folds, chip by chip: every usable labelled dB chip held out once", "",
             "Folds " + "; ".join(f"`{f}` holds out {', '.join(c)}" for f, c in DB_FOLDS.items()) + ". Each trains on both ETCI events and every other "
             "dB chip (Sen1Floods11 and STAC Overflow). The model at threshold 0.5 is compared on each chip with four thresholds applied to that chip: "
             "fixed VH < -22 dB, fixed VV < -15 dB, and Otsu on the chip's own VV and VH (the best of the four, chosen on the chip itself, favours the "
             f"thresholds). A win or a loss is a difference of more than {TIE} IoU; a chip without labelled water is judged by its false-water share "
             "(the share of its valid pixels called water, lower is better). `W / T / L` counts chips with the seeds' mean IoU; `all seeds` counts every chip and seed.", "",
             "| recipe | budget | steps | seeds | chips | W / T / L (seed means) | W / T / L (all seeds) | mean IoU, wet chips | mean recall, wet chips | best threshold, wet chips | paired gain over the default (± se, chip-seeds) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in s.itertuples():
        lines.append(f"| {r.recipe} | {r.budget} | {r.steps:.0f} | {r.seeds} | {r.chips} | {r.wtl} | {r.wtl_all} | **{r.iou:.3f}** | {r.recall:.3f} | {r.best_thr:.3f} | {r.paired} |")
    lines.append("")
    for rec in (s.recipe.unique() if per_chip else []): lines += chip_table_md(cf, rec)
    return lines

def table(out=Path(__file__).parent/'PROTOCOL.md'):
    "Summarise every run into bench/PROTOCOL.md."
    df = runs_frame()
    lines = [f"# Generalisation protocol: results", "",
             "Written by `python bench/protocol.py --table-only` from `bench/protocol/runs/*.json` "
             f"({len(df)} runs). Machine: 2 CPU cores (AMD EPYC with AVX512-BF16: bf16 training, about 240 optimizer steps in 8 CPU-min), no GPU; each run one torch thread, two runs side by side, niced; "
             "**except the dB folds and the `bal`/`rough`/`balrough` recipes (2026-12-04), which ran on an AMD EPYC with AVX2 only (`lscpu`): fp32 training, about 50 steps "
             "in 8 CPU-min (the `steps` and `epochs` columns). Compare those runs with each other, not with the older ones: a CPU budget is not the same training on another CPU.** "
             "A CPU budget is process CPU time (`floodseg.learner.CPUBudget`); a step budget (`--steps`, tables headed 'N steps') is a number of optimizer steps "
             "(`floodseg.learner.StepBudget`), the same training on any machine. Water IoU pooled over every valid labelled pixel of the held-out event(s); "
             "the model is the last of the budget. Folds: `nal` = train nebraska, test northal; `neb` = train northal, "
             "test nebraska; `s1` = train both ETCI events + STAC Overflow, test the 11 Sen1Floods11 chips. mean ± sd over seeds (n). "
             "† = an ETCI-only fold of a recipe that differs from another only for dB data (its land statistics): the other recipe's runs stand in "
             "(" + ", ".join(f"`{b}` for `{a}`" for a, b in SAME_ON_ETCI.items()) + ").", ""]
    base = {f: json.loads((OUT/f'baselines_{f}.json').read_text()) for f in FOLDS if (OUT/f'baselines_{f}.json').exists()}
    lines += ["## Threshold baselines (tuned on the training events only)", "",
              "| fold | VV raw | VH raw | VV z (own event statistics) | VH z | best on the test data |", "|---|---|---|---|---|---|"]
    for f, b in base.items():
        cell = lambda k: f"{b[k]['test_iou']:.3f} (< {b[k]['threshold']:.2f})" if k in b else '–'
        lines.append(f"| {f} | {cell('raw_vv')} | {cell('raw_vh')} | {cell('z_vv')} | {cell('z_vh')} | **{b['best_threshold_iou']:.3f}** |")
    lines += ["", "`best on the test data` picks the best of the four on the held-out event itself, which favours the baseline; the "
              "model is compared with it.", ""]
    for budget in sorted(df[df.fold.isin(MAIN_FOLDS)].budget.unique(), key=budget_key):   # the dB folds have their own section
        for policy, what in [('iou_cap', "decision threshold 0.5, a test scene wetter than the training events standardised at their water share "
                                        "(`floodseg.radiometry.at_water_share`, the library's rule now)"),
                             ('iou', 'decision threshold 0.5, the rule before `at_water_share` (a scene\'s own all-pixel statistics at any water share)'), ('iou_pc', 'prior-corrected threshold (w1 / (w0 + w1) for class-weighted CE, else 0.5)'),
                             ('iou_tv', 'threshold chosen on the training events\' validation blocks')]:
            lines += [f"## {budget} of training, {what}", "", recipe_markdown(df, budget, policy), ""]
    lines += chip_markdown()
    lines += rule_markdown()
    lines += etci_rule_markdown()
    lines += lever_markdown()
    lines += ensemble_markdown()
    lines += ["## Levers and whether they were measured", "", "| recipe | what it tests | runs (fold: seeds) |", "|---|---|---|"]
    for r, what in LEVERS.items():
        g = df[df.recipe == r]
        done = ', '.join(f"{f}@{b}: {len(x)}" for (f, b), x in g.groupby(['fold', 'budget'])) if len(g) else 'not run yet'
        if len(g) and r in SAME_ON_ETCI: done += f" (ETCI folds: `{SAME_ON_ETCI[r]}`'s runs)"
        lines.append(f"| {r} | {what} | {done} |")
    lines.append("")
    adapt = [json.loads(f.read_text()) for f in sorted((OUT/'adapt').glob('*.json'))] if (OUT/'adapt').exists() else []
    if adapt:
        ad = pd.DataFrame([dict(run=a['run'], recipe=a['recipe'], fold=a['fold'], minutes=a['adapt_cpu_min'], lo=a['lo'], hi=a['hi'],
                                before=a['before']['iou'], after=a['after']['iou']) for a in adapt])
        lines += ["## Self-training on the test event (`floodseg.adapt.self_train`, its labels unused)", "",
                  "| recipe | fold | CPU-min | pseudo-labels (lo, hi) | runs | IoU before | IoU after | gain |", "|---|---|---|---|---|---|---|---|"]
        for (rec, f, m, lo, hi), g in ad.groupby(['recipe', 'fold', 'minutes', 'lo', 'hi']):
            lines.append(f"| {rec} | {f} | {m:g} | {lo:g}, {hi:g} | {len(g)} | {g.before.mean():.3f} | {g.after.mean():.3f} | {(g.after - g.before).mean():+.3f} |")
        lines.append("")
    ens = [json.loads(f.read_text()) for f in sorted((OUT/'ensembles').glob('*.json'))] if (OUT/'ensembles').exists() else []
    if ens:
        lines += ["## Seed ensembles (mean water probability of a recipe's saved seeds; inference cost × the number of members)", "",
                  "| recipe | fold | CPU-min each | members | member IoU (mean) | ensemble IoU | gain |", "|---|---|---|---|---|---|---|"]
        for e in ens:
            lines.append(f"| {e['recipe']} | {e['fold']} | {e['budget_cpu_min']:g} | {len(e['members'])} | {np.mean(e['member_iou']):.3f} | {e['iou']:.3f} | {e['iou'] - np.mean(e['member_iou']):+.3f} |")
        lines.append("")
    lines += infer_markdown()
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

def infer_frame(suffix, scores=lambda s: {k: v['iou'] for k, v in s.items()}):
    "The results `bench/protocol/infer/*_<suffix>.json` of `bench/infer_levers.py`, a row per saved model: recipe, fold and its `scores`."
    d = OUT/'infer'
    rs = [json.loads(f.read_text()) for f in sorted(d.glob(f'*_{suffix}.json'))] if d.exists() else []
    return pd.DataFrame([dict(recipe=r['model'].rsplit('_', 3)[0], fold=r['fold'], **scores(r['scores'])) for r in rs])

def infer_section(t, title, prose, cols):
    "A Markdown section of the per-model frame `t`: per recipe and fold, the mean of each of `cols` ({header: column, or (a, b) for the mean gain a - b})."
    if not len(t): return []
    cell = lambda g, c: f"{(g[c[0]] - g[c[1]]).mean():+.3f}" if isinstance(c, tuple) else f"{g[c].mean():.3f}"
    lines = [f"## {title}", "", prose, "", "| recipe | fold | models | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for (rec, f), g in t.groupby(['recipe', 'fold']):
        lines.append(f"| {rec} | {f} | {len(g)} | " + " | ".join(cell(g, c) for c in cols.values()) + " |")
    return lines + [""]

def infer_markdown():
    "Sections for the inference-side levers of `bench/infer_levers.py` (TTA subsets, AdaBN, a permanent-water map, mostly-water scenes), if they were run."
    lines, d = [], OUT/'infer'
    lines += infer_section(infer_frame('tta'), "Test-time augmentation subsets (`bench/infer_levers.py --tta`; threshold 0.5, the same saved models)",
        "x1 = no TTA, x2 = identity + horizontal flip, x4 = identity, both flips and 180° rotation; inference cost x1, x2, x4.",
        {'x1': 'x1', 'x2': 'x2', 'x4': 'x4', 'gain of x2': ('x2', 'x1'), 'gain of x4': ('x4', 'x1')})
    lines += infer_section(infer_frame('bn'), "BatchNorm statistics re-estimated on the test event (AdaBN, `bench/infer_levers.py --bn`; threshold 0.5, the same saved models, the library's rule)",
        "`training` = the BatchNorm statistics the model was trained with; `test event` = every BatchNorm layer's mean and variance recomputed "
        "over the held-out event's own tiles (per event: each Sen1Floods11 country is one), labels unused. Inference cost x2 (one more pass).",
        {'training': 'train', 'test event': 'event', 'gain': ('event', 'train')})
    lines += infer_section(infer_frame('perm'), "A permanent-water map or'ed at prediction time (`bench/infer_levers.py --perm`; ETCI folds, threshold 0.5, the same saved models)",
        "`map` = ETCI's `water_body_label` alone (the dataset's permanent water, scored against the flood label); `+ map` = the prediction or'ed with it; "
        "the thresholds are the fold's, tuned on the training events. Not a trained input channel; the shared Sen1Floods11 chips have no such map.",
        {'map alone': 'perm', 'model': 'model', 'model + map': 'model_or_perm', 'VV threshold': 'raw_vv', 'VV threshold + map': 'raw_vv_or_perm',
         'VH threshold': 'raw_vh', 'VH threshold + map': 'raw_vh_or_perm'})
    water = [json.loads(f.read_text()) for f in sorted(d.glob('*_water.json'))] if d.exists() else []
    if water:
        lines += ["## Mostly-water scenes (`bench/infer_levers.py --water`): the held-out event's water-richest tiles, standardised three ways", "",
                  "`own` = the scene's own statistics under the model's rule before `at_water_share` (`auto`: all valid pixels; `ownland`: its land, `land_stats`); "
                  "`rule now` = the library's rule (`norm_stats` with the training events' water share: a wetter scene standardised at that share, `at_water_share`); "
                  "`event` = the whole event's all-pixel statistics; `stored` = the training statistics. Water IoU at 0.5.", "",
                  "| model | tiles | labelled water share | seen from its land | training events' share | own | rule now | event | stored |", "|---|---|---|---|---|---|---|---|---|"]
        for w in water:
            for r in w['scenes']:
                g = lambda k: f"{r[k]:.3f}" if r.get(k) is not None else '–'
                lines.append(f"| {w['model']} | {r['tiles']} | {r['water_share']:.3f} | {g('land_water')} | {g('cap')} | {r['own']:.3f} | {g('rule')} | {r['event']:.3f} | {r['stored']:.3f} |")
        lines.append("")
    return lines

class SeedEnsemble:
    "EXPERIMENT: the mean water probability of several predictors of one recipe (its seeds); inputs are standardised under the first one's statistics."
    def __init__(self, preds): self.preds, self.cfg, self.bs = preds, preds[0].cfg, preds[0].bs
    threshold, temperature = 0.5, 1.
    def probs(self, xb, tta=False): return np.mean([p.probs(xb, tta=tta) for p in self.preds], axis=0)

def ensemble_run(recipe, fold, budget=8.):
    "Score the mean probability of the saved seeds of `recipe` on `fold` (the runs of its ETCI stand-in on ETCI folds)."
    rec = SAME_ON_ETCI.get(recipe, recipe) if fold != 's1' else recipe
    names = sorted(f.name for f in (OUT/'models').glob(f'{rec}_{fold}_s*_b{budget:g}') if (OUT/'runs'/f'{f.name}.json').exists())
    if len(names) < 2: raise SystemExit(f"{recipe} on {fold}: fewer than 2 saved seeds ({names})")
    singles = [json.loads((OUT/'runs'/f'{n}.json').read_text())['model']['iou'] for n in names]
    _, test = fold_chips(fold)
    ev = evaluate_chips(SeedEnsemble([Predictor.from_folder(OUT/'models'/n, device='cpu') for n in names]), test, progress=False)
    p = ev.per_event().query("event == 'all' and method == 'model'").iloc[0]
    res = dict(recipe=recipe, fold=fold, budget_cpu_min=budget, members=names, member_iou=singles, iou=float(p.iou),
               precision=float(p.precision), recall=float(p.recall), seconds_per_chip=ev.seconds['model'])
    (OUT/'ensembles').mkdir(parents=True, exist_ok=True)
    (OUT/'ensembles'/f'{recipe}_{fold}_b{budget:g}.json').write_text(json.dumps(res, indent=1, default=float))
    print(f"{recipe} {fold}: ensemble of {len(names)} seeds IoU {p.iou:.3f} (members {', '.join(f'{v:.3f}' for v in singles)})", flush=True)
    return res

@call_parse
def main(recipe:str='auto',  # a key of RECIPES
         fold:str='nal',     # a key of FOLDS
         seed:int=0,         # random seed
         budget:float=8.,    # CPU minutes of training
         steps:int=0,        # or: this many optimizer steps (`StepBudget`: the same training on any machine; runs named _n<steps>)
         tta:bool=False,     # also score with 8-fold dihedral TTA
         adapt:float=0.,     # then self-train this many CPU minutes on the test event's tiles (without labels) and score again
         table_only:bool=False, # only print the summary table of the runs so far
         rescore_runs:bool=False, # add threshold scores to earlier runs that lack them (from their saved models)
         rescore_water:str=None, # add `model_cap` (scored with `at_water_share`) to the runs whose names start with this ('' for all that lack it)
         adapt_model:str=None, # self-train the saved model of this run (e.g. auto_nal_s0_b8) for --adapt minutes instead of training
         lo:float=0.1, hi:float=0.9, adapt_lr:float=1e-4, # pseudo-label thresholds and learning rate for --adapt-model
         ensemble:bool=False, # score the mean probability of the recipe's saved seeds on --fold instead of training
        ):
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', 1)))
    if table_only: return table()
    if rescore_runs:
        for f in sorted((OUT/'runs').glob('*.json')):
            if 'model_pc' not in json.loads(f.read_text()): rescore(f.stem)
        return
    if rescore_water is not None:
        for f in sorted((OUT/'runs').glob(f'{rescore_water}*.json')):
            if 'model_cap' not in json.loads(f.read_text()): rescore_cap(f.stem)
        return
    if adapt_model: return adapt_run(adapt_model, adapt or 2., lo, hi, adapt_lr)
    if ensemble: return ensemble_run(recipe, fold, budget)
    if recipe not in RECIPES: raise SystemExit(f"unknown recipe {recipe!r}; known: {sorted(RECIPES)}")
    run(recipe, fold, seed, budget, tta=tta, adapt=adapt, steps=steps or None)
