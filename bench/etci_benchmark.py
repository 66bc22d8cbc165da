#!/usr/bin/env python
"""Cross-event benchmark on the shared ETCI 2021 events: train on one event, report water IoU on the other.

Trains a floodseg model from random initialisation (no ImageNet weights offline) and reports, on the held-out
event: the pooled water IoU of the LAST epoch (the held-out event is never used to pick an epoch or a threshold;
the best-epoch IoU is printed for information only), wall time, peak memory and inference seconds per 256² tile;
beside it, VV and VH thresholds tuned on the training event and applied to the held-out event with the same
pooled IoU. Run with `/usr/bin/time -v` to get the peak memory of the whole process as well.

    /usr/bin/time -v python bench/etci_benchmark.py --train-event nebraska_20170213t002121 \
        --valid-event northal_20190302t234651 --epochs 40 --name r18c4_neb2nal
"""
import json, resource, time, warnings
from pathlib import Path
import numpy as np
import torch
from fastcore.script import call_parse
from fastai.vision.all import set_seed, Transform, Callback, store_attr
import floodseg
from floodseg.io import *
from floodseg.data import *
from floodseg.learner import *
from floodseg.interpret import rectangle_pixels, _pixels, _best_threshold

class Radiometric(Transform):
    "EXPERIMENT: random per-tile gain, per-channel contrast and offset, and noise on standardised SAR batches (training only)."
    split_idx, order = 0, 90
    def __init__(self, shift=0.3, contrast=0.2, noise=0.1, p=0.8): store_attr()
    def encodes(self, x:SARImage):
        b, c = x.shape[:2]
        on = (torch.rand(b, 1, 1, 1, device=x.device) < self.p).to(x.dtype)
        scale = torch.exp((torch.rand(b, c, 1, 1, device=x.device) * 2 - 1) * self.contrast)
        shift = torch.randn(b, 1, 1, 1, device=x.device) * self.shift + torch.randn(b, c, 1, 1, device=x.device) * self.shift / 3
        noise = torch.randn_like(x) * torch.rand(b, 1, 1, 1, device=x.device) * self.noise
        return x + on * (x * (scale - 1) + shift + noise)

class WeightEMA(Callback):
    "EXPERIMENT: exponential moving average of the weights (and BN buffers); validates and ends with the average."
    order = 70
    def __init__(self, decay=0.998): store_attr()
    def before_fit(self):
        self.avg = {k: v.detach().clone() for k, v in self.model.state_dict().items()}; self.n = 0
    def after_step(self):
        self.n += 1; d = min(self.decay, (1 + self.n) / (10 + self.n))
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                if v.dtype.is_floating_point: self.avg[k].lerp_(v.detach(), 1 - d)
                else: self.avg[k].copy_(v)
    def before_validate(self):
        self.live = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.avg)
    def after_validate(self): self.model.load_state_dict(self.live)
    def after_fit(self): self.model.load_state_dict(self.avg)

def threshold_ious(chips, thresholds):
    "Pooled water IoU of `band < t` on `chips` for each `{band: t}` (every chip read once)."
    xs, y = _pixels(chips, list(thresholds), progress=False)
    return {b: float(((xs[b] < t) & y).sum() / ((xs[b] < t) | y).sum()) for b, t in thresholds.items()}

@call_parse
def main(train_event:str='nebraska_20170213t002121', # ETCI event to train on
         valid_event:str='northal_20190302t234651',  # ETCI event held out
         data:str=None,          # ETCI folder (default: ../shared/data/etci2021)
         epochs:int=40,          # epochs
         lr:float=1e-3,          # peak learning rate (one-cycle)
         bs:int=8,               # batch size
         size:int=256,           # training crop size
         arch:str='resnet18',    # encoder
         cut:int=-4,             # encoder cut (-2 keeps all stages, -3 drops the last, -4 the last two)
         last_cross:bool=False,  # DynamicUnet's full-resolution cross connection
         loss:str='wce',         # wce, ce or ce_dice
         keep_dry:float=1.,      # share of water-free training tiles kept
         max_rotate:float=10.,   # rotation augmentation (degrees)
         precision:str='auto',   # auto, fp32, bf16
         seed:int=42,            # random seed
         radiometric:float=0.,   # EXPERIMENT: strength of the radiometric augmentation (0: off; 1: shift 0.3, contrast 0.2, noise 0.1)
         ema:float=0.,           # EXPERIMENT: weight EMA decay (0: off)
         drop_rectangles:bool=False, # EXPERIMENT: leave out training tiles whose labels hold rectangular water blocks
         name:str=None,          # result name (default from the options)
         out:str='bench/results', # folder for the JSON result and the model
         ):
    name = name or f"{arch}_c{-cut}_{loss}_e{epochs}_{train_event[:4]}2{valid_event[:4]}"
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    chips = chip_table(Path(data) if data else shared_data('etci2021'))
    chips = chips[chips.event.isin([train_event, valid_event])].reset_index(drop=True)
    res = dict(name=name, train_event=train_event, valid_event=valid_event, epochs=epochs, lr=lr, bs=bs, size=size, arch=arch,
               cut=cut, last_cross=last_cross, loss=loss, keep_dry=keep_dry, max_rotate=max_rotate, seed=seed, radiometric=radiometric, ema=ema, drop_rectangles=drop_rectangles,
               torch_threads=torch.get_num_threads(), floodseg_version=floodseg.__version__)
    # baselines: thresholds tuned on the training event only
    tr, va = chips[chips.event == train_event], chips[chips.event == valid_event]
    xs, y = _pixels(tr, ['vv', 'vh'], progress=False)
    tuned = {b: _best_threshold(xs[b], y, b, 2000, len(tr)) for b in ('vv', 'vh')}
    held = threshold_ious(va, {b: t['threshold'] for b, t in tuned.items()})
    for b, t in tuned.items(): res[f'threshold_{b}'] = dict(threshold=t['threshold'], train_iou=t['iou'], heldout_iou=held[b])
    print({k: v for k, v in res.items() if k.startswith('threshold')}, flush=True)
    if drop_rectangles:
        rect = np.array([rectangle_pixels(read_chip(r).label) > 0 if r.event == train_event else False for r in chips.itertuples()])
        res['dropped_rectangle_tiles'] = chips.chip_id[rect].tolist()
        print(f"dropped {rect.sum()} training tiles with rectangular label blocks", flush=True)
        chips = chips[~rect].reset_index(drop=True)
    t0 = time.time()
    set_seed(seed, reproducible=True)
    dls = sar_dataloaders(chips, valid_events=[valid_event], bs=bs, size=size, keep_dry=keep_dry, max_rotate=max_rotate, seed=seed, progress=False)
    if radiometric: dls.train.after_batch.add(Radiometric(0.3 * radiometric, 0.2 * radiometric, 0.1 * radiometric))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = flood_learner(dls, arch=arch, pretrained=False, cut=cut, last_cross=last_cross, loss=loss, precision=precision, path=out)
    res['precision'] = learn.floodseg_config['precision']
    print(f"{name}: {len(dls.train_ds)} training tiles, {len(dls.valid_ds)} held-out tiles, precision {res['precision']}", flush=True)
    fit_flood(learn, epochs=epochs, lr=lr, keep_best=False, cbs=[WeightEMA(ema)] if ema else None)
    res['train_minutes'] = (time.time() - t0) / 60
    names = list(learn.recorder.metric_names[1:-1])
    res['history'] = [dict(zip(names, map(float, v))) for v in learn.recorder.values]
    res['heldout_iou_last'] = res['history'][-1]['water_iou']
    res['heldout_dice_last'] = res['history'][-1]['water_dice']
    res['heldout_iou_best_epoch_for_info'] = max(h['water_iou'] for h in res['history'])
    t = time.time(); learn.validate(); res['valid_seconds_per_tile'] = (time.time() - t) / len(dls.valid_ds)
    res['model_cost'] = model_cost(n=5, arch=arch, cut=cut, last_cross=last_cross)
    res['peak_rss_gb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    save_model(learn, out/name, overwrite=True, metrics=dict(heldout_iou=res['heldout_iou_last'], valid_event=valid_event))
    (out/f'{name}.json').write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != 'history'}, indent=1))
