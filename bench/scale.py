#!/usr/bin/env python
"""Scale-out bench (issue 13): Dask distributed for many scenes and for one big scene, accelerate for training.

1. 8 mosaic scenes (real Sen1Floods11 chips of the shared data, else the embedded sample) mapped by `map_scenes_dask` on a
   LocalCluster of 1 and of 2 (`--workers`) single-threaded worker processes: wall time, speed-up, peak memory (VmHWM) per worker;
2. one big mosaic split across 2 workers by `map_scene_dask` against the sequential `map_scene` (1 torch thread): times and
   the maximum difference of the probability maps;
3. one training run of `floodseg_train` (embedded sample) in 1 process and in 2 processes (`accelerate launch`): time, metrics.

Writes the table to bench/SCALE.md (`--out`: elsewhere). Run niced on an otherwise quiet machine:

    OMP_NUM_THREADS=1 nice python bench/scale.py [--big 8192] [--side 1536] [--epochs 2] [--workers 1,2] [--device cuda] [--out FILE]
"""
import argparse, json, os, platform, re, subprocess, sys, tempfile, time, warnings
from datetime import date
from pathlib import Path
import numpy as np, pandas as pd, rasterio, torch
from rasterio.windows import Window
from floodseg.io import chip_table, read_chip, shared_data, sample_path
from floodseg.predict import Predictor
from floodseg.scene import map_scene
from floodseg.distributed import map_scenes_dask, map_scene_dask
from floodseg.interpret import md_table   # the library's Markdown table

def peak_mb(): return int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read())[1]) / 1024

def mosaic(imgs, first, path, side, seed):
    "A side × side 2-band dB GeoTIFF of real 512² chips, each turned by a random dihedral transform."
    rng = np.random.default_rng(seed)
    prof = dict(driver='GTiff', width=side, height=side, count=2, dtype='float32', crs=first.crs, transform=first.transform,
                nodata=float('nan'), tiled=True, blockxsize=512, blockysize=512, compress='DEFLATE')
    with rasterio.open(path, 'w', **prof) as dst:
        for i in range(0, side, 512):
            for j in range(0, side, 512):
                a = np.rot90(imgs[rng.integers(len(imgs))], rng.integers(4), (1, 2))
                h, w = min(512, side - i), min(512, side - j)
                dst.write(np.ascontiguousarray(a[:, :h, :w]), window=Window(j, i, w, h))
    return path

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--side', type=int, default=1536); ap.add_argument('--big', type=int, default=8192)
    ap.add_argument('--epochs', type=int, default=2); ap.add_argument('--skip-train', action='store_true')
    ap.add_argument('--workers', default='1,2', help='Dask worker counts for the many-scenes runs, comma-separated (the big scene uses the largest)')
    ap.add_argument('--device', default=None, help='torch device of the workers and the sequential run (default: the GPU when there is one)')
    ap.add_argument('--out', default=str(Path(__file__).parent/'SCALE.md'), help='where to write the table')
    a = ap.parse_args()
    workers = [int(w) for w in a.workers.split(',')]
    from distributed import LocalCluster, Client
    warnings.simplefilter('ignore')
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix='floodseg_scale_'))
    src = (shared_data() or sample_path())/'sen1floods11'
    chips = chip_table(src)
    chips = chips[chips.label.notna()].head(60)
    imgs = [c.image for c in map(read_chip, chips.itertuples()) if c.valid.mean() > 0.5]
    first = read_chip(chips.iloc[0])
    scenes = tmp/'scenes'; scenes.mkdir()
    for i in range(8): mosaic(imgs, first, scenes/f'mosaic_{i}.tif', a.side, i)
    rows, notes = [], []
    many = {}
    for n in workers:
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cl, Client(cl) as client:
            client.run(lambda: __import__('floodseg.distributed'))   # imports (PyTorch) before the clock starts
            t = time.perf_counter()
            res = map_scenes_dask(client, 'default', scenes, out=tmp/f'maps_{n}', progress=False, log=None, threads=1, device=a.device)
            wall = time.perf_counter() - t
            mem = client.run(peak_mb)
        assert res.error.isna().all()
        many[n] = wall
        rows.append(dict(what=f'8 scenes of {a.side}², {n} worker(s)', wall_s=round(wall, 1), speed_up=round(many[workers[0]] / wall, 2),
                         peak_mb_per_worker=', '.join(f'{m:.0f}' for m in mem.values())))
        print(rows[-1], flush=True)
    same = all(Path(tmp/f'maps_{workers[0]}'/p.name).read_bytes() == p.read_bytes() for n in workers[1:] for p in (tmp/f'maps_{n}').glob('*_water_mask.tif'))
    notes.append(f'mask COGs of {" and ".join(map(str, workers))} workers byte-identical: {same}')
    big = mosaic(imgs, first, tmp/'big.tif', a.big, 99)
    t = time.perf_counter(); seq = map_scene(Predictor.from_folder('default', device=a.device), big, tmp/'big_seq', progress=False, quicklook=False); t_seq = time.perf_counter() - t
    nbig = max(2, *workers)
    with LocalCluster(n_workers=nbig, threads_per_worker=1, processes=True, dashboard_address=None) as cl, Client(cl) as client:
        client.run(lambda: __import__('floodseg.distributed'))
        t = time.perf_counter(); par = map_scene_dask(client, 'default', big, tmp/'big_dask', progress=False, quicklook=False, threads=1, device=a.device); t_par = time.perf_counter() - t
        mem = client.run(peak_mb)
    with rasterio.open(seq['prob']) as x, rasterio.open(par['prob']) as y:
        diff = max(float(np.abs(np.nan_to_num(x.read(1, window=w)) - np.nan_to_num(y.read(1, window=w))).max()) for _, w in x.block_windows(1))
    rows.append(dict(what=f'one {a.big}² scene, sequential (1 thread)', wall_s=round(t_seq, 1), speed_up=1.0, peak_mb_per_worker=''))
    rows.append(dict(what=f'one {a.big}² scene, {nbig} workers (bands of 1 tile row)', wall_s=round(t_par, 1), speed_up=round(t_seq / t_par, 2),
                     peak_mb_per_worker=', '.join(f'{m:.0f}' for m in mem.values())))
    notes.append(f'{a.big}² scene: max |dask - sequential| probability = {diff:.3g}; masks byte-identical: {Path(seq["mask"]).read_bytes() == Path(par["mask"]).read_bytes()}')
    print(rows[-2:], notes[-1], flush=True)
    if not a.skip_train:
        train = Path(sys.executable).parent/'floodseg_train'
        base = [str(train), '--recipe', 'quick', '--epochs', str(a.epochs), '--size', '256', '--lr', '1e-3', '--precision', 'fp32', '--keep', 'last']
        launch = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no']
        env = dict(os.environ, OMP_NUM_THREADS='1')
        for n, bs, cmd in [(1, 4, [sys.executable] + base), (2, 4, launch + base), (2, 2, launch + base)]:
            t = time.perf_counter()
            r = subprocess.run(cmd + ['--bs', str(bs), '--out', str(tmp/f'train_{n}_{bs}')], capture_output=True, text=True, env=env)
            if r.returncode: raise RuntimeError(r.stderr[-3000:])
            wall = time.perf_counter() - t
            h = json.loads((tmp/f'train_{n}_{bs}'/'metrics.json').read_text())['history'][-1]
            if n == 1: t1 = wall
            rows.append(dict(what=f'floodseg_train, embedded sample, {a.epochs} epochs at 256², {n} process(es), bs {bs} each ({n * bs} per step)', wall_s=round(wall, 1),
                             speed_up=round(t1 / wall, 2),
                             peak_mb_per_worker=f"valid loss {h['valid_loss']:.3f}, water IoU {h['water_iou']:.3f}"))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows).rename(columns=dict(peak_mb_per_worker='peak MB per worker / metrics'))
    cmd = 'OMP_NUM_THREADS=1 nice python bench/scale.py ' + ' '.join(sys.argv[1:])
    dev = a.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    md = (f"# Scale-out bench\n\n{date.today()}, {platform.node()}: {os.cpu_count()} CPU cores (shared with other processes while measured), "
          f"torch {torch.__version__}, device {dev}, 1 torch thread per worker, shipped model (bf16 autocast where the CPU has it).\n\n    {cmd}\n\n"
          + md_table(table) + '\n\n' + '\n'.join(f'- {n}' for n in notes) + '\n')
    out = Path(a.out)
    keep = out.read_text().partition('<!-- notes -->')[2] if out.exists() else ''   # hand-written reading below the marker stays
    out.write_text(md + ('\n<!-- notes -->' + keep if keep else ''))
    print(md)

if __name__ == '__main__': main()
