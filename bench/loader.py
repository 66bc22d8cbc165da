#!/usr/bin/env python
"""Loader throughput (issue 26): how fast the training DataLoader feeds the default recipe on this CPU, where a chip's
time goes, and what the chip cache (`floodseg.data.ChipCache`) changes.

1. chips per second of the training loader of the default recipe (`sar_dataloaders` as `floodseg.recipe.train` builds it:
   256² crops, bs 8, dihedral and rotation augmentation, jitter 1) with num_workers 0, 1 and 2: reading the files every
   epoch, through an empty cache (its first epoch) and through the filled cache. The chips are the shared data's usable
   labelled chips (all three layouts, as `floodseg_train --data` takes them) repeated `--repeat` times as symlinked copies,
   so that each copy is a chip of its own for the cache and an epoch is long enough to time;
2. where a chip's time goes (num_workers 0, reading the files and reading the cache): open, read (GDAL decodes the PNG
   or GeoTIFF), units check, label values, nodata masks, standardise, nodata to ignore, crop, collate, the batch
   augmentation, and the rest (fastai's own work between them);
3. reading one chip by layout, from its files and from the cache;
4. the training step of the default recipe's network (`flood_learner`, cut -3, bf16 where the CPU has it: forward,
   backward, optimizer step), timed by `StepTimer` on the same loader.

Prints the tables and writes them into bench/SCALE.md as its own section (replaced when run again; the rest of the file
is kept). Timings are meaningful only on an otherwise idle machine: pause other work while it runs.

    OMP_NUM_THREADS=1 nice python bench/loader.py [--repeat 3] [--steps 10]
"""
import argparse, os, platform, re, shutil, subprocess, sys, tempfile, time, warnings
from collections import defaultdict
from datetime import date
from pathlib import Path
import numpy as np, pandas as pd, torch

import rasterio, rasterio.io
import floodseg.io as fio
import floodseg.data as fdata
from floodseg.io import LAYOUTS, READ_CHECKS, chip_table, shared_data, sample_path, survey_chips
from floodseg.data import sar_dataloaders, ChipCache
from floodseg.recipe import RECIPES
from floodseg.learner import flood_learner, StepTimer, cpu_bf16_supported, resolve_precision
from floodseg.interpret import md_table   # the library's Markdown table
from fastai.callback.core import Callback, CancelFitException

R = RECIPES['default']
BEGIN, END = '<!-- loader.py -->', '<!-- /loader.py -->'

def machine() -> str:
    "CPU model, cores, AVX512-BF16, torch."
    model = next((l.split(':', 1)[1].strip() for l in subprocess.run(['lscpu'], capture_output=True, text=True).stdout.splitlines()
                  if l.startswith('Model name')), platform.processor())
    flags = open('/proc/cpuinfo').read()
    return (f"{model}, {os.cpu_count()} cores, AVX512-BF16: {'yes' if 'avx512_bf16' in flags else 'no'} "
            f"(oneDNN bf16: {'yes' if cpu_bf16_supported() else 'no'}), torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)")

# ---------------------------------------------------------------- the chips
def chip_set(repeat:int, tmp:Path):
    "Usable labelled chips of the shared data (else the embedded sample), as `repeat` symlinked copies; and the one-copy survey."
    src = shared_data() or sample_path()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        chips = pd.concat([chip_table(src/l) for l in LAYOUTS], ignore_index=True)
        sv = survey_chips(chips, progress=False)
    sv = sv[sv.problem.isna() & sv.label.notna()].reset_index(drop=True)
    def link(p, k):
        if not isinstance(p, (str, Path)): return p
        dst = tmp/f'copy{k}'/Path(p).relative_to(src)
        if not dst.exists(): dst.parent.mkdir(parents=True, exist_ok=True); os.symlink(p, dst)
        return dst
    copies = [sv.assign(chip_id=sv.chip_id + f'~{k}', **{c: [link(p, k) for p in sv[c]] for c in ('vv', 'vh', 'label')}) for k in range(repeat)]
    return pd.concat(copies, ignore_index=True), sv, src

def loaders(sv, nw=0, cache=None, seed=0):
    "The default recipe's DataLoaders, as `floodseg.recipe.train` builds them."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return sar_dataloaders(sv, valid_pct=R.valid_pct, bs=R.bs, size=R.size, norm=R.norm, land_stats=R.land_stats, keep_dry=R.keep_dry,
                               balance=R.balance, wet=R.wet, max_rotate=R.max_rotate, jitter=R.jitter, rough=R.rough, seed=seed,
                               num_workers=nw, progress=False, cache=cache, val_bs=1 if sv.layout.nunique() > 1 else None)

def epoch(dl, max_batches=None):
    "Chips loaded, seconds, seconds to the first batch."
    n, first, t0 = 0, None, time.perf_counter()
    for i, (xb, _) in enumerate(dl):
        n += len(xb)
        if first is None: first = time.perf_counter() - t0
        if max_batches and i + 1 >= max_batches: break
    return n, time.perf_counter() - t0, first

# ---------------------------------------------------------------- the profile
class Stages:
    "Seconds per stage, from wrappers around the functions each stage calls (the library's own, patched for the run)."
    def __init__(self): self.t, self.undo = defaultdict(float), []
    def wrap(self, obj, name, stage):
        f = getattr(obj, name)
        def timed(*a, **k):
            t = time.perf_counter()
            try: return f(*a, **k)
            finally: self.t[stage] += time.perf_counter() - t
        setattr(obj, name, timed); self.undo.append((obj, name, f))
    def wrap_pipeline(self, dl, attr, prefix):
        "Time each transform of a fastai `Pipeline` attribute (`after_item`, `after_batch`) of `dl`, as `compose_tfms` applies them."
        pipe, split_idx = getattr(dl, attr), getattr(dl.dataset, 'split_idx', None)   # what `TfmdDL.before_iter` would give the pipeline
        def run(o):
            for f in pipe.fs:
                t = time.perf_counter(); o = f(o, split_idx=split_idx); self.t[f'{prefix}{type(f).__name__}'] += time.perf_counter() - t
            return o
        setattr(dl, attr, run)
    def __enter__(self): return self
    def __exit__(self, *exc):
        for obj, name, f in reversed(self.undo): setattr(obj, name, f)

def profile(sv, cache=None, max_batches=None):
    "Seconds per stage of one epoch of the training loader (num_workers 0), the chips it loaded and its seconds."
    dl = loaders(sv, 0, cache).train
    if cache is not None: epoch(dl)   # fill the cache first: the profile is of the filled cache
    with Stages() as s:
        s.wrap(rasterio, 'open', 'open'); s.wrap(rasterio.io.DatasetReader, 'read', 'read (decode)')
        units = READ_CHECKS['units']
        def timed_units(img, row, _f=units):
            t = time.perf_counter()
            try: return _f(img, row)
            finally: s.t['units check'] += time.perf_counter() - t
        READ_CHECKS['units'] = timed_units
        s.wrap(fio, 'map_label', 'label values')
        s.wrap(fdata, 'read_sar', 'read_sar'); s.wrap(fdata, 'read_label', 'read_label')
        s.wrap(fdata, 'standardise', 'standardise')
        s.wrap(ChipCache, 'entry', 'cache key (stat, hash)'); s.wrap(ChipCache, '_load', 'cache read'); s.wrap(ChipCache, '_write', 'cache write')
        s.wrap_pipeline(dl, 'after_item', 'item: '); s.wrap_pipeline(dl, 'after_batch', 'batch: ')
        s.wrap(dl, 'create_batch', 'collate')
        try: n, secs, _ = epoch(dl, max_batches)
        finally: READ_CHECKS['units'] = units
    t = dict(s.t)
    inner = sum(t.get(k, 0) for k in ('open', 'read (decode)', 'units check', 'label values'))
    t['nodata masks, dtype, close'] = t.pop('read_sar', 0) + t.pop('read_label', 0) - inner
    t['rest (fastai dispatch, tensors, sampling)'] = secs - sum(v for k, v in t.items())
    return t, n, secs

STAGE_ORDER = ['open', 'read (decode)', 'units check', 'label values', 'nodata masks, dtype, close', 'cache key (stat, hash)', 'cache read', 'cache write', 'standardise',
               'item: NodataToIgnore', 'item: RandomTileCrop', 'collate']

def stage_table(files, cached):
    "ms per chip by stage, reading the files and reading the cache."
    (tf, nf, sf), (tc, nc, sc) = files, cached
    keys = [k for k in STAGE_ORDER if k in tf or k in tc]
    keys += sorted(k for k in set(tf) | set(tc) if k.startswith('batch: ')) + ['rest (fastai dispatch, tensors, sampling)']
    rows = []
    for k in keys:
        a, b = tf.get(k, 0) / nf * 1e3, tc.get(k, 0) / nc * 1e3
        name = {'batch: Dihedral': 'augment: affine warp (dihedral and rotation, merged by fastai into one grid_sample)'}.get(k, k)
        rows.append(dict(stage=name.replace('batch: ', 'augment: ').replace('item: ', ''), files_ms=round(a, 3), files_share=f'{a / (sf / nf * 1e3):.1%}',
                         cache_ms=round(b, 3), cache_share=f'{b / (sc / nc * 1e3):.1%}'))
    rows.append(dict(stage='**all (ms per chip)**', files_ms=round(sf / nf * 1e3, 3), files_share='100%', cache_ms=round(sc / nc * 1e3, 3), cache_share='100%'))
    rows.append(dict(stage='**chips/s**', files_ms=round(nf / sf, 1), files_share='', cache_ms=round(nc / sc, 1), cache_share=''))
    return pd.DataFrame(rows).rename(columns=dict(files_ms='ms per chip, files', files_share='share', cache_ms='ms per chip, cache', cache_share='share '))

def by_layout(sv, tmp, n=20):
    "ms to read one chip (image and label) by layout: from its files (`read_sar` + `read_label`), and from a filled cache."
    cc, rows = ChipCache(tmp/'cache_layout'), []
    for lay, g in sv.groupby('layout'):
        g = list(g.head(n).itertuples())
        for r in g: cc.read(r)   # fill
        for r in g: fio.read_sar(r); fio.read_label(r)   # warm the page cache and the units judgements alike
        t = time.perf_counter()
        for r in g: fio.read_sar(r); fio.read_label(r)
        tf = (time.perf_counter() - t) / len(g)
        t = time.perf_counter()
        for r in g: cc.read(r)
        tc = (time.perf_counter() - t) / len(g)
        shape = 'x'.join(map(str, fio.read_sar(g[0])[0].shape[1:]))
        rows.append(dict(layout=lay, chip=shape, chips=len(g), files_ms=round(tf * 1e3, 2), cache_ms=round(tc * 1e3, 2), faster=f'{tf / tc:.1f}x'))
    return pd.DataFrame(rows)

# ---------------------------------------------------------------- the step
class StopAfter(Callback):
    "Stop the fit after `n` training batches (no validation)."
    order = 100
    def __init__(self, n): self.n = n
    def after_batch(self):
        if self.training and self.iter + 1 >= self.n: raise CancelFitException()

def step_time(sv, steps, tmp):
    "StepTimer's summary of `steps` training steps of the default recipe's network on the default loader (num_workers 0, no cache)."
    dls = loaders(sv)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = flood_learner(dls, arch=R.arch, pretrained=False, cut=R.cut, last_cross=R.last_cross, loss=R.loss, precision=R.precision, path=tmp)
    timer = StepTimer()
    with learn.no_bar(): learn.fit_one_cycle(1, R.lr, cbs=[timer, StopAfter(steps)])
    t = timer.table().iloc[2:]   # the first steps build oneDNN's kernels
    return dict(precision=learn.floodseg_config['precision'], steps=len(t), step_s=float(t.step_s.median()), loader_s=float(t.loader_s.median()),
                loader_share=float(t.loader_s.sum() / (t.loader_s.sum() + t.step_s.sum())))

# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--repeat', type=int, default=3, help='copies of the shared chips in the timed table')
    ap.add_argument('--steps', type=int, default=10, help='training steps timed (the first 2 are left out)')
    ap.add_argument('--workers', default='0,1,2', help='num_workers to time, comma-separated')
    ap.add_argument('--max-batches', type=int, default=None, help='stop each timed epoch after this many batches (a quick look, not a measurement)')
    ap.add_argument('--no-write', action='store_true', help='print only; leave bench/SCALE.md as it is')
    a = ap.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix='floodseg_loader_'))
    try:
        t0 = time.time()
        table, one, src = chip_set(a.repeat, tmp)
        n_train_one = len(loaders(one).train_ds)
        print(f"{len(one)} usable chips in {src} ({one.layout.value_counts().to_dict()}), {a.repeat} copies: {len(table)} chips", flush=True)
        rows = []
        for nw in [int(w) for w in a.workers.split(',')]:
            for mode in ('files', 'empty cache', 'filled cache'):
                cache = None if mode == 'files' else tmp/f'cache_{nw}'
                if mode == 'empty cache': shutil.rmtree(cache, ignore_errors=True)
                dls = loaders(table, nw, cache)
                n, secs, first = epoch(dls.train, a.max_batches)
                rows.append(dict(read_from=mode, num_workers=nw, chips=n, seconds=round(secs, 2), chips_per_s=round(n / secs, 1),
                                 shared_epochs_per_s=round(n / secs / n_train_one, 3), first_batch_s=round(first, 2)))
                print(rows[-1], flush=True)
        thr = pd.DataFrame(rows)
        stages = stage_table(profile(table, None, a.max_batches), profile(table, tmp/'cache_profile', a.max_batches))
        print(md_table(stages), flush=True)
        lay = by_layout(one, tmp)
        print(md_table(lay), flush=True)
        st = step_time(table, a.steps, tmp)
        print(st, flush=True)
        wall = time.time() - t0
    finally: shutil.rmtree(tmp, ignore_errors=True)

    step_chips = R.bs / st['step_s']
    best = thr.loc[thr.chips_per_s.idxmax()]
    files0 = thr[(thr.read_from == 'files') & (thr.num_workers == 0)].chips_per_s.iloc[0]
    cached0 = thr[(thr.read_from == 'filled cache') & (thr.num_workers == 0)].chips_per_s.iloc[0]
    cmd = 'OMP_NUM_THREADS=1 nice python bench/loader.py ' + ' '.join(sys.argv[1:])
    thr = pd.concat([thr, pd.DataFrame([dict(read_from=f"(training step: {R.arch} cut {R.cut}, {st['precision']}, forward, backward, optimizer)", num_workers='',
                                             chips='', seconds=round(st['step_s'], 2), chips_per_s=round(step_chips, 1),
                                             shared_epochs_per_s=round(step_chips / n_train_one, 4), first_batch_s='')])], ignore_index=True)
    md = (f"{BEGIN}\n## Loader throughput (issue 26)\n\n{date.today()}, {platform.node()}: {machine()}. Load average {load[0]:.2f} over the minute before the start, "
          f"{wall / 60:.1f} min in all.\n\n    {cmd}\n\n"
          f"Chips: the {len(one)} usable labelled chips of `{src}` ({', '.join(f'{v} {k}' for k, v in one.layout.value_counts().items())}) "
          f"repeated {a.repeat} times as symlinked copies ({len(table)} chips; each copy is a chip of its own for the cache); the default recipe's "
          f"training loader (`sar_dataloaders` as `floodseg.recipe.train` builds it: {R.size}² crops, bs {R.bs}, dihedral and {R.max_rotate:g}° rotations, "
          f"jitter {R.jitter:g}, spatial validation blocks of {R.valid_pct:.0%}), one epoch of its {thr.chips.iloc[0]} training chips per row; the last row is the network's training step, seconds per batch of {R.bs}. "
          f"'shared epochs/s' counts epochs of one copy ({n_train_one} training chips, what `floodseg_train --data` on the shared data trains on).\n\n"
          + md_table(thr.rename(columns=dict(read_from='read from', num_workers='num_workers', chips_per_s='chips/s', shared_epochs_per_s='shared epochs/s',
                                             first_batch_s='first batch, s'))) +
          f"\n\nWhere a chip's time goes (num_workers 0; one epoch, reading the files, and reading a filled cache; per chip, the batch stages divided by {R.bs}):\n\n"
          + md_table(stages) + "\n\nReading one chip (image and label) by layout, from its files and from the cache:\n\n" + md_table(lay) +
          f"\n\nTraining step of the default recipe's network (`flood_learner`, {R.arch} cut {R.cut}, {st['precision']}, bs {R.bs}, {R.size}², 1 thread; "
          f"median of {st['steps']} steps after 2 of warm-up, `StepTimer`): **{st['step_s']:.2f} s per step, {step_chips:.1f} chips/s**; in the same loop "
          f"the loader (num_workers 0, files) took {st['loader_s'] * 1e3:.0f} ms per batch, **{st['loader_share']:.1%} of training time**. "
          f"The loader gives {files0:.0f} chips/s from the files and {cached0:.0f} from the cache with num_workers 0 (best: {best.chips_per_s:.0f}, "
          f"{best.read_from}, num_workers {best.num_workers}), {files0 / step_chips:.0f}x and {cached0 / step_chips:.0f}x what the step consumes.\n{END}\n")
    print(md)
    if not a.no_write:
        out = Path(__file__).parent/'SCALE.md'
        text = out.read_text() if out.exists() else ''
        text = re.sub(re.escape(BEGIN) + '.*?' + re.escape(END) + r'\n', lambda m: md, text, flags=re.S) if BEGIN in text else text.rstrip('\n') + '\n\n' + md
        out.write_text(text)

if __name__ == '__main__': main()
