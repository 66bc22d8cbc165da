#!/usr/bin/env python
"""Which shared scenes raise which advisory flag with the shipped model (`floodseg.scene.advisory_flags`).

Every usable dB scene of ../shared/data (Sen1Floods11 hand-labelled chips, STAC Overflow training and test chips) is mapped
by `map_scene` into a temporary folder; each ETCI event is put back together (`etci_event_scene`), predicted with
`predict_array` and its flags computed by the same `advisory_flags`. Prints a markdown table (x = raised, . = not,
- = not assessed) with each scene's values.

Usage: python bench/flags.py [--no-etci]   (run from the repository root; writes nothing)
"""
import argparse, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np, pandas as pd
from floodseg.io import *
from floodseg.radiometry import image_stats
from floodseg.predict import Predictor
from floodseg.scene import SARScene, map_scene, find_scenes, predict_array, advisory_flags, LOW_CONFIDENCE

def row(name, kind, flags, water):
    mark = lambda v: '-' if v['raised'] is None else 'x' if v['raised'] else '.'
    val = lambda v: v['value'] if not isinstance(v['value'], dict) else max(v['value']['z'])
    r = dict(scene=name, layout=kind, water=f'{water:.1%}' if water is not None else '-')
    for k, v in flags.items(): r[k] = mark(v)
    r['land-seen water'] = f"{flags['wetter']['value']:.1%}" if flags['wetter']['value'] is not None else '-'
    r['land z (max)'] = f"{val(flags['radiometry']):.2f}" if flags['radiometry']['value'] else '-'
    r['sd ratio (max)'] = f"{max(flags['radiometry']['value']['std_ratio']):.2f}" if flags['radiometry']['value'] else '-'
    r['nodata share'] = f"{flags['nodata']['value']:.1%}" if flags['nodata']['value'] is not None else '-'
    r['low-confidence share'] = f"{flags['low_confidence']['value']:.1%}" if flags['low_confidence']['value'] is not None else '-'
    print(' | '.join(map(str, r.values())), file=sys.stderr, flush=True)
    return r

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--no-etci', action='store_true', help='leave out the two ETCI events (minutes each on a CPU)')
    a = ap.parse_args()
    S = shared_data()
    if S is None: sys.exit('../shared/data is absent')
    warnings.simplefilter('ignore')
    pred, rows, t0 = Predictor.from_folder('default'), [], time.time()
    scenes = find_scenes(*sorted((S/'sen1floods11').rglob('S1Hand')), S/'stac_overflow'/'training_data'/'train_features', S/'stac_overflow'/'test_features')
    with tempfile.TemporaryDirectory() as tmp:
        for r in scenes[scenes.problem.isna()].itertuples():
            with SARScene(r.path, r.vh if isinstance(r.vh, Path) else None, name=r.name) as sc:
                res = map_scene(pred, sc, tmp, formats='cog', quicklook=False, overwrite=True, progress=False)
            rows.append(row(r.name, sc.layout, res['flags'], res['water_pixels'] / res['valid_pixels'] if res['valid_pixels'] else None))
    if not a.no_etci:
        et = chip_table(S/'etci2021')
        for ev in sorted(et.event.unique()):
            sc = etci_event_scene(et, ev)
            own = image_stats(sc.image)
            prob = predict_array(pred, sc.image, 'etci2021')
            ok = ~np.isnan(prob)
            counts = dict(pixels=prob.size, valid_pixels=int(ok.sum()), water_pixels=int((prob[ok] > pred.threshold).sum()),
                          unsure_pixels=int(((prob[ok] > LOW_CONFIDENCE[0]) & (prob[ok] < LOW_CONFIDENCE[1])).sum()))
            flags = advisory_flags(pred.cfg, 'etci2021', own, pred.norm('etci2021', own), None, 'auto', counts)
            rows.append(row(f'{ev} (event, {(et.event == ev).sum()} tiles)', 'etci2021', flags, counts['water_pixels'] / counts['valid_pixels']))
    df = pd.DataFrame(rows)
    print('| ' + ' | '.join(df.columns) + ' |'); print('|' + '---|' * len(df.columns))
    for r in df.itertuples(index=False): print('| ' + ' | '.join(map(str, r)) + ' |')
    print(f"\n{len(df)} scenes; raised: " + ', '.join(f"{k} {int((df[k] == 'x').sum())}" for k in ('wetter', 'radiometry', 'units', 'nodata', 'low_confidence'))
          + f"; {time.time() - t0:.0f} s")

if __name__ == '__main__': main()
