#!/usr/bin/env python
"""Screenshot of the floodseg_serve page after a finished job, in headless Chromium (not run by CI).

Starts the app on a free loopback port (in this process, `floodseg.serve.serving`), maps a scene (default: the
embedded sample's Sentinel-1 chip Nigeria_812045) through the API, opens `/?job=<id>` in headless Chromium (which runs the page's own
JavaScript: it polls the job, shows its facts, fetches the quicklook) and saves the screenshot, cropped to the page
and reduced to a palette PNG.

    python tools/screenshot_serve.py --model floodseg_run/model [--out nbs/images/serve_page.png]

Without --model it serves the shipped model ('default') when there is one, else a model trained here for a few CPU
seconds on the embedded dB chips (rough maps). Needs `chromium` (Debian: apt-get install chromium).
"""
import argparse, shutil, subprocess, sys, tempfile, time, warnings
from pathlib import Path
import httpx, numpy as np, pandas as pd
from PIL import Image

def tiny_model(path, budget=0.1):
    "A model trained for `budget` CPU minutes on the embedded Sen1Floods11 and STAC Overflow chips (Nigeria_812045 left out)."
    from fastai.vision.all import set_seed
    from floodseg.io import chip_table, sample_path
    from floodseg.data import sar_dataloaders
    from floodseg.learner import flood_learner, fit_flood, save_model
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        db = pd.concat([chip_table(sample_path(l)) for l in ('sen1floods11', 'stac_overflow')], ignore_index=True)
        db = db[db.chip_id != 'Nigeria_812045'].reset_index(drop=True)
        db['split'] = np.where(db.chip_id == 'jja10', 'valid', 'train')
        set_seed(42, reproducible=True)
        learn = flood_learner(sar_dataloaders(db, valid_split='valid', bs=4, size=256, progress=False), pretrained=False)
        with learn.no_bar(), learn.no_logging(): fit_flood(learn, lr=1e-3, budget=budget, keep_best=False)
    return save_model(learn, path)

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', help="model folder (default: the shipped model, else one trained here for a few seconds)")
    p.add_argument('--scene', help='2-band GeoTIFF to map (default: the embedded Sen1Floods11 chip Nigeria_812045)')
    p.add_argument('--out', default='nbs/images/serve_page.png', help='PNG to write')
    p.add_argument('--width', type=int, default=1000)
    p.add_argument('--height', type=int, default=2000, help='window height (the PNG is cropped to the page)')
    p.add_argument('--chromium', default=shutil.which('chromium') or shutil.which('chromium-browser') or 'chromium')
    a = p.parse_args()
    from floodseg.io import sample_path
    from floodseg.learner import model_path, CONFIG_FILE
    from floodseg.serve import create_app, serving
    tmp = Path(tempfile.mkdtemp(prefix='floodseg_screenshot_'))
    model = a.model or ('default' if (model_path('default')/CONFIG_FILE).exists() else str(tiny_model(tmp/'model')))
    scene = Path(a.scene or sample_path('sen1floods11')/'v1.1/data/flood_events/HandLabeled/S1Hand/Nigeria_812045_S1Hand.tif')
    with serving(create_app(model, tmp/'data')) as url, httpx.Client(base_url=url, timeout=60) as c:
        r = c.post('/v1/maps', files=dict(scene=(scene.name, scene.read_bytes(), 'image/tiff')), data=dict(min_area='500'))
        r.raise_for_status()
        jid = r.json()['id']
        t0 = time.monotonic()
        while (st := c.get(f'/v1/maps/{jid}').json())['state'] not in ('done', 'failed'):
            if time.monotonic() - t0 > 300: sys.exit(f'job {jid} not finished after 300 s')
            time.sleep(0.2)
        print(f"job {jid}: {st['state']}, water {st.get('result', {}).get('water_share', 0):.1%}, {st['timings']['run_s']:.1f} s")
        png = tmp/'page.png'
        cmd = [a.chromium, '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
               '--no-first-run', f'--user-data-dir={tmp/"chromium"}', '--hide-scrollbars', f'--window-size={a.width},{a.height}',
               '--virtual-time-budget=15000', f'--screenshot={png}', f'{url}/?job={jid}']
        subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    im = Image.open(png).convert('RGB')
    rows = np.where((np.asarray(im) < 250).any(axis=(1, 2)))[0]           # crop the blank bottom of the window
    im = im.crop((0, 0, im.width, min(im.height, int(rows.max()) + 24)))
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    im.quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f'wrote {out} ({im.width}x{im.height}, {out.stat().st_size / 1024:.0f} KB)')
    shutil.rmtree(tmp, ignore_errors=True)

if __name__ == '__main__': main()
