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
from fastai.vision.all import set_seed
import floodseg
from floodseg.io import *
from floodseg.data import *
from floodseg.learner import *
from floodseg.interpret import tune_threshold, _pixels

def threshold_iou(chips, band, t):
    "Pooled water IoU of `band < t` on `chips`."
    x, y = _pixels(chips, band, progress=False)
    w = x < t
    return float((w & y).sum() / (w | y).sum())

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
         name:str=None,          # result name (default from the options)
         out:str='bench/results', # folder for the JSON result and the model
         ):
    name = name or f"{arch}_c{-cut}_{loss}_e{epochs}_{train_event[:4]}2{valid_event[:4]}"
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    chips = chip_table(Path(data) if data else shared_data('etci2021'))
    chips = chips[chips.event.isin([train_event, valid_event])].reset_index(drop=True)
    res = dict(name=name, train_event=train_event, valid_event=valid_event, epochs=epochs, lr=lr, bs=bs, size=size, arch=arch,
               cut=cut, last_cross=last_cross, loss=loss, keep_dry=keep_dry, max_rotate=max_rotate, seed=seed,
               torch_threads=torch.get_num_threads(), floodseg_version=floodseg.__version__)
    # baselines: thresholds tuned on the training event only
    tr, va = chips[chips.event == train_event], chips[chips.event == valid_event]
    for band in ('vv', 'vh'):
        t = tune_threshold(tr, band, progress=False)
        res[f'threshold_{band}'] = dict(threshold=t['threshold'], train_iou=t['iou'], heldout_iou=threshold_iou(va, band, t['threshold']))
    print({k: v for k, v in res.items() if k.startswith('threshold')}, flush=True)
    t0 = time.time()
    set_seed(seed, reproducible=True)
    dls = sar_dataloaders(chips, valid_events=[valid_event], bs=bs, size=size, keep_dry=keep_dry, max_rotate=max_rotate, seed=seed, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = flood_learner(dls, arch=arch, pretrained=False, cut=cut, last_cross=last_cross, loss=loss, precision=precision, path=out)
    res['precision'] = learn.floodseg_config['precision']
    print(f"{name}: {len(dls.train_ds)} training tiles, {len(dls.valid_ds)} held-out tiles, precision {res['precision']}", flush=True)
    fit_flood(learn, epochs=epochs, lr=lr, keep_best=False)
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
