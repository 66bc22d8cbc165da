#!/usr/bin/env python
"""Train the default recipe on all shared labelled data and ship it inside the package (`floodseg/models/default/`).

1. `floodseg_train` (in this process, so `floodseg.recipe.train`, the one training path) with a recipe on the three shared
   datasets at once (ETCI 2021's two events, Sen1Floods11, STAC Overflow), validating on whole spatial blocks inside every
   event: the command a user would run. `--recipe default` is the shipped model's recipe (`floodseg.recipe.RECIPES`).
2. The weights are stored in float16 when float32 would make the folder larger than 16 MB (`load_model` casts them back);
   the predictions of the two copies are compared on the embedded sample.
3. `MODEL_CARD.md` is written beside them: training data and licences, the protocol's scores for the recipe, cost,
   intended use and known failure modes.

    OMP_NUM_THREADS=1 python bench/ship_model.py --recipe default --seed 0          # the shipped recipe (30 CPU-min)
    OMP_NUM_THREADS=1 python bench/ship_model.py --recipe balrough_c3_jitter --steps 900   # a protocol recipe
    python bench/ship_model.py --card-only     # after new protocol runs or bench/cost.py: refresh the card only
    python bench/ship_model.py --provenance    # record the training events and chips of a model shipped before configs kept them
"""
import json, shutil, sys, time, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from fastcore.script import call_parse
from safetensors.torch import load_file, save_file
sys.path.insert(0, str(Path(__file__).parent))
from protocol import RECIPES, LIBRARY, library_recipe, OUT as PROTO, MAIN_FOLDS, SAME_ON_ETCI, BASELINES, runs_frame, recipe_table, training_water, chip_frame, chip_summary, chip_table_md, rule_frame, etci_rule_markdown
import floodseg
from floodseg.io import *
from floodseg.learner import *
from floodseg.predict import Predictor
from floodseg.recipe import get_recipe, Recipe
from floodseg.cli import floodseg_train

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT/'floodseg'/'models'/'default'

def protocol_rows(recipe):
    "Per (budget, fold): (n, mean, sd, best tuned threshold) of the recipe's held-out IoU, from the protocol's own table (stand-ins included)."
    df, out = runs_frame(), {}
    stand_in = SAME_ON_ETCI.get(recipe)   # a recipe that trains as this one on the one-event ETCI folds
    for budget in sorted(df[df.recipe.isin([recipe, stand_in])].budget.unique()):
        t, base = recipe_table(df, budget, 'iou_cap')   # threshold 0.5 under the library's rule (`at_water_share`)
        t = t.set_index('recipe')
        for f in MAIN_FOLDS:
            cell = t.loc[recipe, f] if recipe in t.index else None
            if not cell and f in ('nal', 'neb') and stand_in in t.index: cell = t.loc[stand_in, f]
            if cell: m, sd, n, _ = cell; out[(budget, f)] = (n, float(m), float(sd) if n > 1 else float('nan'), base[f])
    return out

DB_BUDGET = '200 steps'   # the dB folds' runs the card reports (`protocol.budget_label`)
SPLIT_RULE = 'model_at_otsu'   # `bench/infer_levers.py --split`'s name for the library's split rule on a dB chip (each chip its own scene)

def db_folds(recipe, split:bool=False):
    "The protocol's dB folds for `recipe` (every usable labelled dB chip held out once), at 0.5 or (`split`) under the split rule: wins / ties / losses, means and per-chip rows, or None."
    cf = chip_frame() if not split else rule_frame().query("rule == @SPLIT_RULE").drop(columns='rule')
    if not len(cf): return None
    cf = cf[cf.budget == DB_BUDGET]
    if not (cf.recipe == recipe).any(): return None
    s = chip_summary(cf).set_index('recipe').loc[recipe]
    m = cf[cf.recipe == recipe].groupby(['fold', 'chip']).mean(numeric_only=True).reset_index()
    m = m[m.water > 0].assign(best=lambda d: d[[f'{k}_iou' for k in BASELINES]].max(axis=1), best_name=lambda d: d[[f'{k}_iou' for k in BASELINES]].idxmax(axis=1).str[:-4])
    losses = [dict(chip=r.chip, water=r.water, model=r.model_iou, recall=r.model_recall, best=r.best, threshold=r.best_name)
              for r in m.itertuples() if r.model_iou < r.best - 0.02]
    return dict(split=split, seeds=int(s.seeds), chips=int(s.chips), steps=float(s.steps), wins_ties_losses=s.wtl, wins_ties_losses_all_seeds=s.wtl_all, iou=float(s.iou),
                recall=float(s.recall), best_threshold=float(s.best_thr), losses=losses, table=chip_table_md(cf, recipe)[2:])

def db_section(mc):
    "The card's section on the held-out dB chips."
    d = mc.get('db_folds')
    if not d: return "Not measured for this recipe (`bench/protocol.py`'s dB folds)."
    lost = '; '.join(f"{l['chip']} ({l['water']:.0%} water: model {l['model']:.3f}, recall {l['recall']:.3f}; {l['threshold']} {l['best']:.3f})" for l in d['losses'])
    return (f"Every usable labelled dB chip of the shared data (9 Sen1Floods11, 4 STAC Overflow) held out once, in three folds that each train this "
            f"recipe on both ETCI events and the other dB chips ({d['seeds']} seed{'s' * (d['seeds'] > 1)}, {d.get('steps', float('nan')):.0f} optimizer steps each, fewer than this model's training"
            + ("; water at p > 0.5 or below the chip's own Otsu VH split where p > 0.2, the split rule this model is shipped with" if d.get('split') else '') + "), and compared chip by chip with "
            f"fixed VH < -22 dB, fixed VV < -15 dB and Otsu on the chip's own VV and VH (the best of the four picked on the chip itself). "
            f"Wins / ties / losses (within 0.02 IoU is a tie; a chip without water is judged by the share it calls water): **{d['wins_ties_losses']}** "
            f"of {d['chips']} chips. Mean over the chips with water: model {d['iou']:.3f} (recall {d['recall']:.3f}), best threshold {d['best_threshold']:.3f}."
            + (f" Lost: {lost}." if lost else '') + "\n\n" + "\n".join(d['table']))

ALL_NOTE = """- 8-bit scenes are standardised with the mean and standard deviation of all their valid pixels, and those follow the scene's water
  share; so a scene with more water than the wettest training event (seen from its own land) is standardised at that event's share
  (`floodseg.radiometry.at_water_share`). On Northern Alabama's water-richest tiles a protocol model of this recipe trained on Nebraska
  (seed 0) scores 0.82-0.88 from 5 % to 30 % water with it, against 0.80 falling to 0.005 with the scene's own all-pixel statistics, and
  0.76 at 40 % water, where the land estimate starts to fail (`bench/infer_levers.py --water`). Scenes with more than half water on the
  stored scale, or fewer than 256² valid pixels, use the stored statistics."""
LAND_NOTE = """- 8-bit scenes are standardised with their own land's statistics (`land_stats`), which hold while land is most of the scene;
  a scene with more than half water, or fewer than 256² valid pixels, uses the stored statistics."""

def agreement(a, b):
    "Largest |difference| of the water probability of two model folders on the embedded sample's chips."
    worst, pa_, pb_ = 0., Predictor.from_folder(a, 'cpu'), Predictor.from_folder(b, 'cpu')
    for lay in LAYOUTS:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            chips = chip_table(sample_path(lay))
        for (_, _, pa), (_, _, pb) in zip(pa_.chips(chips, progress=False), pb_.chips(chips, progress=False)):
            if pa is not None: worst = max(worst, float(np.nanmax(np.abs(pa - pb))) if np.isfinite(pa).any() else 0.)
    return worst

def validation_by_event(model, root, seed, valid_pct=0.15):
    "Water IoU of `model` on each event of the spatial validation blocks `floodseg_train --seed seed` held out of the shared data."
    import pandas as pd
    from floodseg.data import spatial_split
    from floodseg.interpret import evaluate_chips
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        chips = pd.concat([chip_table(root/l) for l in ('etci2021', 'sen1floods11', 'stac_overflow')], ignore_index=True)
        v = spatial_split(chips, valid_pct, seed=seed).query("split == 'valid'")
        ev = evaluate_chips(Predictor.from_folder(model, device='cpu'), v, progress=False).per_event().query("method == 'model'")
    n = v.groupby('event').size()
    return {r.event: dict(iou=None if np.isnan(r.iou) else float(r.iou), chips=int(n.get(r.event, len(v)))) for r in ev.itertuples()}

def refresh_card():
    "Rewrite the shipped model's card and `model_card` entry with the protocol's current scores and cost (weights untouched)."
    cfg = json.loads((DEST/CONFIG_FILE).read_text()); mc = cfg['model_card']
    mc['protocol'] = {f"{f}@{b}": dict(n=n, mean=m, sd=s, best_threshold=t) for (b, f), (n, m, s, t) in protocol_rows(mc['recipe']).items()}
    mc['db_folds'] = db_folds(mc['recipe'], bool(cfg.get('split')))
    if (PROTO/'cost.json').exists(): mc['cost'] = json.loads((PROTO/'cost.json').read_text()).get(mc['recipe'], {})
    if shared_data() is not None: mc['validation_by_event'] = validation_by_event(DEST, shared_data(), mc['seed'])
    (DEST/CONFIG_FILE).write_text(json.dumps(cfg, indent=1, default=float))
    (DEST/'MODEL_CARD.md').write_text(model_card(cfg, None))
    print(f"refreshed {DEST/'MODEL_CARD.md'}")

FLAGS_NOTE = """
## Advisory flags
Every map's STAC Item (`<scene>_item.json`, `floodseg.stac`) stores five flags, which `floodseg_predict` prints on one line per scene
and the service returns with each job (`floodseg.scene.advisory_flags`; limits in `floodseg.scene.FLAG_LIMITS`). A raised flag does not
mean the map is wrong; it means the scene is outside what this model was trained or judged on, so check the map against the quicklook.
- `wetter`: the scene's water share seen from its land (pixels darker in VV than its land's mean minus two land standard deviations) is
  above the wettest training event the model stores (8.0 %, etci2021; the same limit is used for dB scenes, for which the model stores
  none). The model's known failure mode is to miss water on floods unlike its training events.
- `radiometry`: the scene's land (dB) or valid pixels (8-bit) have a VV or VH mean more than 2.5 training standard deviations from the
  stored training statistics, or a standard deviation 2.5 times larger or smaller: just beyond what the training chips span
  (up to 2.36 and 2.33). Another sensor mode, a calibration error, a season or landscape the model has not seen.
- `units`: the values were converted to dB (linear power, amplitude, dB × N), whether the units were stated or judged from the values;
  a wrong judgement shifts every pixel.
- `nodata`: more than 25 % of the scene's pixels have no data; the water share and areas speak for less of the scene.
- `low_confidence`: more than 10 % of the valid pixels have a water probability between 0.2 and 0.8; the map depends on the threshold there.

Which shared chips raise which flag with this model is in `bench/FLAGS.md` (`bench/flags.py`).
"""

def split_note(cfg):
    "The card's words for the model's split rule ('' without one)."
    sp = cfg.get('split')
    return (f", and the split rule: water also where p > {sp['prob']:g} and {sp['band'].upper()} is below the scene's own Otsu split "
            "(`floodseg.predict.Predictor.mask`; computed once per scene from a reduced read of it, and once per event for a chip table)") if sp else ''

def etci_split_section(cfg):
    "The card's table of the split rule on the ETCI folds (`protocol.etci_rule_markdown`), for a model with a split rule."
    if not cfg.get('split'): return ''
    rec = cfg['model_card']['recipe']
    lines = etci_rule_markdown()
    rows = [l for l in lines if l.startswith(f"| {SAME_ON_ETCI.get(rec, rec)} |")]
    if not rows: return ''
    head = [l for l in lines if l.startswith('| recipe') or l.startswith('|---')]
    return ("\n### The split rule on the ETCI folds\n"
            f"The ETCI folds above at 0.5 and with the split rule ({'runs of `' + SAME_ON_ETCI[rec] + '`, the same training there' if rec in SAME_ON_ETCI else 'this recipe'}): "
            "with each tile's own split, as if every 256² tile were a scene, and with the event's split over all its tiles, as `map_scene` computes it for a scene "
            "and `evaluate_chips` for a chip table.\n\n" + "\n".join(head + rows) + "\n")

def model_card(cfg, metrics):
    mc = cfg['model_card']
    st = cfg['stats']
    prot = "\n".join(f"| {k.split('@')[0]} | {k.split('@')[1]} | {v['n']} | {v['mean']:.3f}" + (f" ± {v['sd']:.3f}" if v['n'] > 1 else '') +
                     f" | {v['best_threshold']:.3f} | {v['mean'] - v['best_threshold']:+.3f} |" for k, v in sorted(mc['protocol'].items()))
    c = mc['cost']
    vb = mc.get('validation_by_event') or {}
    by_event = ('; by event: ' + ', '.join(f"{e} {v['iou']:.3f} ({v['chips']} chips)" if v['iou'] is not None else f"{e} – ({v['chips']} chips, no water labelled)"
                                        for e, v in vb.items() if e != 'all')) if vb else ''
    cost = (f"{c['gmac_per_256']:.1f} GMAC and {c['mparams']:.2f} M parameters; {c['bf16_s_per_256']:.3f} s per 256² tile in bfloat16 and "
            f"{c['fp32_s_per_256']:.3f} s in float32 (2 threads of this project's AMD EPYC CPU, `bench/cost.py`)") if c else "see `bench/PROTOCOL.md`"
    wet = {k: v['water'] for k, v in st.items() if v.get('water') is not None}
    water = (f"\n  The wettest training event is {', '.join(f'{v:.1%} water ({k}, seen from its land)' for k, v in wet.items())}: a scene with more water "
             "is standardised at that share (`at_water_share`).") if wet and cfg['norm'] != 'ownland' else ''
    return f"""# Model card: floodseg `default`

The model `floodseg_predict` and `load_model('default')` use when no other is named. Trained by `bench/ship_model.py` on
{mc['trained']} with floodseg {cfg.get('floodseg_version')}.

## Model
- DynamicUnet (fastai) with a {cfg['arch']} encoder cut at {cfg['cut']}, 2 input channels (VV, VH), 2 classes (dry, water), from random
  initialisation (no ImageNet weights); {cost}.
- Input statistics (`norm = '{cfg['norm']}'`): ETCI-style 8-bit scenes are standardised with the scene's (event's) own mean and standard
  deviation over {"its land (`floodseg.radiometry.land_stats`: VV trimmed below 2 land standard deviations, which does not move with the scene's water share)" if cfg['norm'] == 'ownland' else 'its valid pixels'}; dB scenes with the stored dB statistics of the training chips{"' dry (labelled non-water) pixels, so that land is near N(0, 1) in both kinds of scene" if any(v.get('pixels') == 'dry' for v in st.values()) else ''}
  ({', '.join(f"{k}: VV {v['mean'][0]:.2f} ± {v['std'][0]:.2f}, VH {v['mean'][1]:.2f} ± {v['std'][1]:.2f}" for k, v in st.items())}).{water}
- Decision threshold {cfg['threshold']} on the water probability{split_note(cfg)}. Weights stored as {mc['weights_dtype']}
  (largest difference in water probability from the float32 weights on the embedded sample: {mc['max_prob_difference_from_float32']:.4f}).

## Training
- Recipe `{mc['recipe']}` of `bench/protocol.py` ({', '.join(f'{k}={v}' for k, v in mc['recipe_options'].items())}), trained for
  {mc['budget_cpu_min']:g} CPU minutes ({mc['cpu_minutes'] or 0:.1f} measured) with one-cycle over CPU time, seed {mc['seed']}, last weights kept.
- Data: every labelled chip of the shared development data, {mc['n_train']} for training and {mc['n_valid']} in whole spatial blocks for
  validation (water IoU of the last weights on them: {mc['validation_iou_last']:.3f}{by_event}):
  - ETCI 2021 (NASA IMPACT / IEEE GRSS ESI TC): nebraska_20170213t002121 (198 tiles) and northal_20190302t234651 (356 tiles), 256² 8-bit
    PNG, flood labels (permanent water not labelled as flood).
  - Sen1Floods11 v1.1 hand-labelled chips (Bonafilia et al., CVPR Workshops 2020; Cloud to Street; CC BY 4.0): 9 usable 512² dB chips from
    8 countries, all surface water labelled.
  - STAC Overflow (DrivenData with Microsoft AI for Earth and Cloud to Street, 2021): 4 labelled 512² dB chips from 4 flood events.
  - Contains modified Copernicus Sentinel data (2017-2019).

## How well the recipe generalises
Held-out water IoU of this recipe trained on the training events of each fold (not of this exact model, which has seen every event):
`nal` = train nebraska, test northal; `neb` = train northal, test nebraska; `s1` = train both ETCI events and STAC Overflow, test the
Sen1Floods11 chips. Decision threshold 0.5, statistics under the library's rule (a test event wetter than the training events standardised
at their water share). mean ± sd over seeds; the threshold is the best of a VV and a VH threshold tuned on the training events, picked on the
test data (which favours it).{f" On the two ETCI folds the runs of `{SAME_ON_ETCI[mc['recipe']]}` stand in (the two recipes differ only for dB data)." if mc['recipe'] in SAME_ON_ETCI else ''} Full table and the other recipes: `bench/PROTOCOL.md`.

| fold | CPU-min | seeds | model IoU | best tuned threshold | gain |
|---|---|---|---|---|---|
{prot}

### Held-out dB chips, one by one
{db_section(mc)}
{etci_split_section(cfg)}
## Intended use
Mapping open surface water during floods in Sentinel-1 GRD scenes (VV and VH, dB, 10 m, any CRS) and in ETCI-style 8-bit tiles, as a
first map for analysts and a baseline for researchers. Check the map against the quicklook; use it with other evidence for decisions.

## Known failure modes
- Few training events (two ETCI events, fifteen dB chips): expect the score to vary from event to event as in the table above.
- Flooded vegetation and urban flooding (double bounce makes water bright) are missed; Sen1Floods11's Pakistan chip is of this kind.
- Water that is bright in VV but dark in VH (wind-roughened water, shallow water over fields) is mapped as dry: ETCI's events teach water
  dark in VV. On the held-out dB chips above, the chips lost to a threshold are of this kind or have little, scattered water: STAC
  Overflow's jja10 (Paraguay, 64 % water, as bright as its land in VV) is mapped at a fraction of its water even with the split rule,
  because the network gives it less than 0.2; rough-water augmentation (`rough=1`) recovers most of it on the dB folds but costs Northern
  Alabama about 0.1 IoU in false water, so it is not in this recipe (`bench/PROTOCOL.md`).
- The split rule trusts the scene's histogram where the network is unsure (0.2 < p <= 0.5). On a dry scene the split divides land, so
  dark land the network is unsure of (smooth fields, tarmac, shadow) can turn to water; on a scene whose water is mostly bright the split
  finds little. Where this matters, compare with the probability COG (`_prob.tif`) or set `split` to null in the model's config
  (`update_model_config`), which gives the network's own decision at 0.5.
- Balanced sampling gives each dataset a third of every epoch, so the ETCI tiles, nearly every draw before, now get a third: on the validation blocks of northal this model scores 0.833 (0.758 without the split rule) where the previous one scored 0.878.
  The protocol's ETCI folds cannot show this (each trains on one ETCI event only, where balancing changes nothing).
- Smooth dark land (dry sand, tarmac, some fields) and radar shadow can be called water; no terrain or permanent-water input is used.
- The ETCI labels mark flood only, the dB datasets all water, so the model's notion of "water" mixes the two.
- ETCI's nebraska event carries rectangular flood labels over bright farmland: only 39 % of its labelled water is dark in VV (below its
  land's mean minus two standard deviations), against 95 % in northal. They teach some noise, and they are why the validation IoU above
  is low on nebraska's blocks while northal's are mapped well.
{LAND_NOTE if cfg['norm'] == 'ownland' else ALL_NOTE}{FLAGS_NOTE}"""

def add_provenance(root, valid_pct=0.15):
    """Record in the shipped model's config what it was trained and validated on (events and chip ids), for models trained
    before `flood_learner` kept that record: the chips `floodseg_train` took from the shared data for the card's seed (the same
    survey, spatial split and unusable-chip rule, through `sar_dataloaders`), checked against the card's chip counts. Metadata
    only: the weights are not touched."""
    from floodseg.data import sar_dataloaders
    cfg = json.loads((DEST/CONFIG_FILE).read_text()); mc = cfg['model_card']
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        chips = pd.concat([chip_table(root/l) for l in ('etci2021', 'sen1floods11', 'stac_overflow')], ignore_index=True)
        dls = sar_dataloaders(chips, bs=mc['recipe_options']['bs'], size=mc['recipe_options']['size'], seed=mc['seed'], valid_pct=valid_pct,
                              norm=mc['recipe_options']['norm'], land_stats=mc['recipe_options'].get('land', True), progress=False, val_bs=1)
    tr = training_data(dls)
    if (len(tr['chips']), len(tr['valid_chips'])) != (mc['n_train'], mc['n_valid']):
        raise SystemExit(f"reconstructed {len(tr['chips'])} training and {len(tr['valid_chips'])} validation chips; the card says {mc['n_train']} and {mc['n_valid']}")
    rec = library_recipe(mc['recipe_options'], steps=mc.get('steps'), budget=mc['budget_cpu_min']).replace(pretrained=True)   # floodseg_train looked for ImageNet weights
    cfg['recipe'], cfg['seed'] = rec.to_dict(), mc['seed']   # how to retrain it: `floodseg_train --recipe <this config.json> --seed <seed>`
    cfg['training'] = dict(tr, recorded=f"after training, by bench/ship_model.py --provenance ({time.strftime('%Y-%m-%d')}): the chips floodseg_train "
                           f"took from the shared data with seed {mc['seed']} and {valid_pct:.0%} spatial validation blocks; weights unchanged")
    by = ', '.join(f"{e} {n}" for e, n in dls.survey[dls.survey.is_valid].groupby('event').size().items())
    if 'measured_on' not in cfg['metrics']:
        cfg['metrics']['epoch'] -= 1   # floodseg_train counted epochs from 1 then; fastai, and floodseg now, from 0
    cfg['metrics']['measured_on'] = (f"{mc['n_valid']} validation chips (whole spatial blocks ({valid_pct:.0%}) of the training events: {by}) after "
                                     f"epoch {cfg['metrics']['epoch']}, the last whole epoch of the {mc['budget_cpu_min']:g} CPU-minute budget (the weights "
                                     "trained on into the next epoch, which was not validated); in-sample events, not a held-out flood (see model_card.protocol)")
    (DEST/CONFIG_FILE).write_text(json.dumps(cfg, indent=1, default=float))
    print(f"recorded {len(tr['events'])} training events, {len(tr['chips'])} training and {len(tr['valid_chips'])} validation chips in {DEST/CONFIG_FILE}")

@call_parse
def main(recipe:str='default', # a library recipe (a floodseg.recipe.RECIPES name or a JSON file of fields), or a bench/protocol.py recipe name
         budget:float=None,   # CPU minutes of training (default: the recipe's schedule; a protocol recipe: 30)
         steps:int=None,      # or: this many optimizer steps
         seed:int=0,          # random seed
         work:str='bench/ship', # working folder (gitignored)
         data:str=None,       # the shared data root (default: ../shared/data)
         card_only:bool=False, # only refresh the shipped model's card (protocol scores, cost) from bench/protocol/
         provenance:bool=False, # only record the shipped model's training events, chips and recipe in its config (metadata; weights untouched)
         reuse:bool=False,     # package the finished training run already in `work` instead of training again
        ):
    if card_only: return refresh_card()
    if provenance: return add_provenance(Path(data) if data else shared_data())
    if recipe in RECIPES:   # a protocol recipe, trained as floodseg_train trains (ImageNet weights looked for), for 30 CPU minutes unless told
        name, rc = recipe, RECIPES[recipe]
        r = library_recipe(rc, steps, budget or 30.).replace(pretrained=True)
    else:
        r = get_recipe(recipe).replace(budget=budget, steps=steps)
        name = LIBRARY.get(recipe, Path(recipe).stem)
        rc = RECIPES.get(name, r.to_dict())
    if rc.get('ema'): raise SystemExit(f"recipe {recipe}: EMA is a protocol experiment, not a recipe field")
    root = Path(data) if data else shared_data()
    if root is None: raise SystemExit("the shared data (../shared/data) is needed to train the shipped model")
    work = ROOT/work
    if not reuse: shutil.rmtree(work, ignore_errors=True); work.mkdir(parents=True)
    (work/'recipe.json').write_text(json.dumps(r.to_dict(), indent=1))
    print(f"training {name}: {r!r} ({r.schedule}), seed {seed}", flush=True)
    t0 = time.time()
    if not (reuse and (work/'run'/'metrics.json').exists()):   # the command a user would run, in this process (floodseg.recipe.train inside)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            floodseg_train(data=[str(root/l) for l in ('etci2021', 'sen1floods11', 'stac_overflow')], recipe=str(work/'recipe.json'), seed=seed, out=str(work/'run'))
    budget = r.budget
    metrics = json.loads((work/'run'/'metrics.json').read_text())
    # half precision when float32 would be too large for the package
    src = work/'run'/'model'
    sd = load_file(src/WEIGHTS_FILE)
    mb32 = sum(v.numel() * 4 for v in sd.values()) / 2**20
    stage = work/'default'; shutil.rmtree(stage, ignore_errors=True); shutil.copytree(src, stage)
    if mb32 > 16: save_file({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, stage/WEIGHTS_FILE)
    diff = agreement(src, stage)   # float16 against float32, same statistics
    cfg = json.loads((stage/CONFIG_FILE).read_text())
    if not any('water' in v for v in cfg['stats'].values()):   # trained before floodseg_train stored it
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            chips = pd.concat([chip_table(root/l) for l in ('etci2021', 'sen1floods11', 'stac_overflow')], ignore_index=True)
        cfg['stats'] = dict(training_water(cfg, chips))   # every chip of the events, labelled or not, as floodseg_train pools them
        print('added the training events\' water share:', {k: v.get('water') for k, v in cfg['stats'].items()}, flush=True)
    rows = protocol_rows(name)
    cost = json.loads((PROTO/'cost.json').read_text()).get(name, {}) if (PROTO/'cost.json').exists() else {}
    cfg['model_card'] = dict(name='floodseg default', recipe=name, recipe_options=rc, budget_cpu_min=budget, steps=r.steps or None, seed=seed,
                             cpu_minutes=metrics.get('cpu_minutes'), n_train=metrics['n_train'], n_valid=metrics['n_valid'],
                             validation_iou_last=metrics['best_epoch']['water_iou'], weights_dtype='float16' if mb32 > 16 else 'float32',
                             max_prob_difference_from_float32=diff,
                             protocol={f"{f}@{b}": dict(n=n, mean=m, sd=s, best_threshold=t) for (b, f), (n, m, s, t) in rows.items()},
                             cost=cost, trained=time.strftime('%Y-%m-%d'), db_folds=db_folds(name, bool(cfg.get('split'))))
    cfg['model_card']['validation_by_event'] = validation_by_event(stage, root, seed)
    (stage/CONFIG_FILE).write_text(json.dumps(cfg, indent=1, default=float))
    (stage/'MODEL_CARD.md').write_text(model_card(cfg, metrics))
    shutil.rmtree(DEST, ignore_errors=True); DEST.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(stage, DEST)
    size = sum(p.stat().st_size for p in DEST.iterdir()) / 2**20
    print(f"shipped {name} ({metrics['n_train']} training chips, {metrics.get('cpu_minutes', 0):.1f} CPU min, "
          f"{(time.time() - t0) / 60:.1f} min) to {DEST}: {size:.1f} MB; max |p float16 - p float32| on the sample {diff:.4f}")
