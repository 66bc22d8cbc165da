#!/usr/bin/env python
"""What the split rule (`floodseg.predict.Predictor.mask` with a config `split`) adds to mapping a scene: a 4096² dB scene
(a mosaic of the shared Sen1Floods11 chips, each turned at random) is mapped by `floodseg.scene.map_scene` with the shipped
model, without and with the rule (tiles 512, overlap 128, bf16, 2 torch threads), and the seconds of each step are
reported per 256² of scene. The rule's work is one Otsu split of the scene's reduced read (shared with its statistics) and,
for every row of tiles, a second read of the rows and the comparison; it shows in the 'write' step.

    python bench/split_cost.py      # writes bench/protocol/split_cost.json
"""
import json, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np
import rasterio
import torch
sys.path.insert(0, str(Path(__file__).parent))
from protocol import OUT
from floodseg.io import chip_table, read_chip, shared_data
from floodseg.predict import Predictor
from floodseg.scene import map_scene

SIZE = 4096

def mosaic(path, chips, size=SIZE, seed=0):
    "A `size`² 2-band dB GeoTIFF of 512² windows, each a real chip turned at random."
    rng = np.random.default_rng(seed)
    imgs = [c.image for c in map(lambda r: read_chip(r, with_label=False), chips.itertuples()) if c.valid.mean() > 0.5]
    first = read_chip(chips.iloc[0], with_label=False)
    prof = dict(driver='GTiff', width=size, height=size, count=2, dtype='float32', crs=first.crs, transform=first.transform,
                nodata=float('nan'), tiled=True, blockxsize=512, blockysize=512)
    with rasterio.open(path, 'w', **prof) as d:
        for r in range(0, size, 512):
            for c in range(0, size, 512):
                img = np.rot90(imgs[rng.integers(len(imgs))], rng.integers(4), (1, 2))
                d.write(np.ascontiguousarray(img), window=rasterio.windows.Window(c, r, 512, 512))

if __name__ == '__main__':
    torch.set_num_threads(2)
    root = shared_data()
    if root is None: sys.exit("needs ../shared/data (Sen1Floods11 chips)")
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        chips = chip_table(root/'sen1floods11')
    tmp = Path(tempfile.mkdtemp())
    mosaic(tmp/'scene.tif', chips)
    plain = Predictor.from_folder('default', device='cpu', precision='bf16')
    ruled = Predictor(plain.model, dict(plain.cfg, split=dict(band='vh', prob=0.2)), precision='bf16')
    per = (SIZE / 256) ** 2
    res = {}
    for name, pred in (('plain', plain), ('split', ruled), ('plain_again', plain), ('split_again', ruled)):
        t = {}
        t0 = time.perf_counter()
        r = map_scene(pred, tmp/'scene.tif', tmp/name, tile=512, overlap=128, progress=False, quicklook=False, timings=t)
        res[name] = dict(total=(time.perf_counter() - t0) / per, **{k: v / per for k, v in t.items()}, water_share=r['water_pixels'] / r['valid_pixels'],
                         split=r['split'])
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in res[name].items()}, flush=True)
    (OUT/'split_cost.json').write_text(json.dumps(dict(scene=f'{SIZE}x{SIZE}', seconds_per_256=res, threads=2, precision='bf16'), indent=1))
    print(f"wrote {OUT/'split_cost.json'}")
