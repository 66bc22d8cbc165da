#!/usr/bin/env python
"""Write bench/RESULTS.md from the benchmark's JSON results and `/usr/bin/time -v` logs (numbers are never typed by hand).

Usage: python bench/summarize.py [names...]   (default: every bench/results/*.json)
"""
import json, re, sys
from pathlib import Path

HERE = Path(__file__).parent
RES = HERE/'results'

def time_v(log:Path) -> dict:
    "Wall time (min), CPU time (min) and peak RSS (GB) from a `/usr/bin/time -v` log."
    if not log.exists(): return {}
    t = log.read_text(errors='replace')
    def grab(pat):
        m = re.search(pat, t)
        return m.group(1) if m else None
    out = {}
    if (w := grab(r'Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)')):
        parts = [float(p) for p in w.split(':')]
        out['wall_min'] = (parts[0] * 60 + parts[1] + (parts[2] / 60 if len(parts) == 3 else 0)) if len(parts) == 3 else parts[0] + parts[1] / 60
    u, s = grab(r'User time \(seconds\): ([\d.]+)'), grab(r'System time \(seconds\): ([\d.]+)')
    if u and s: out['cpu_min'] = (float(u) + float(s)) / 60
    if (m := grab(r'Maximum resident set size \(kbytes\): (\d+)')): out['peak_gb'] = int(m) / 2**20
    return out

def extras(r):
    "The experimental options a run used (none for the default recipe)."
    e = [f"radiometric aug ×{r['radiometric']:g}" if r.get('radiometric') else '', f"weight EMA {r['ema']:g}" if r.get('ema') else '',
         f"{len(r.get('dropped_rectangle_tiles', []))} rectangle-label tiles dropped" if r.get('drop_rectangles') else '']
    return ''.join(f', {x}' for x in e if x)

def row(r):
    tv = time_v(RES/f"{r['name']}.log")
    ev = lambda e: e.split('_')[0]
    return (f"| {ev(r['train_event'])} → {ev(r['valid_event'])} | {r['arch']} cut={r['cut']}, {r['loss']}, {r['epochs']} ep, {r.get('precision','')}{extras(r)} "
            f"| **{r['heldout_iou_last']:.3f}** | {r['threshold_vv']['heldout_iou']:.3f} (VV < {r['threshold_vv']['threshold']:g}) "
            f"| {r['threshold_vh']['heldout_iou']:.3f} (VH < {r['threshold_vh']['threshold']:g}) "
            f"| {tv.get('wall_min', r['train_minutes']):.1f} | {tv.get('cpu_min', float('nan')):.1f} | {tv.get('peak_gb', r['peak_rss_gb']):.2f} "
            f"| {r['model_cost']['gmac']:.1f} | {r['valid_seconds_per_tile']:.3f} |")

def main(names):
    files = [RES/f'{n}.json' for n in names] if names else sorted(RES.glob('*.json'))
    rs = [json.loads(f.read_text()) for f in files]
    lines = ["# ETCI 2021 cross-event benchmark", "",
             "Written by `python bench/summarize.py` from `bench/results/*.json` and the `/usr/bin/time -v` logs of "
             "`bash bench/run_benchmark.sh` (which runs `bench/etci_benchmark.py` for both directions side by side, one torch thread each, "
             "on the 2-core development machine). Training is from random initialisation (ImageNet weights cannot be downloaded here). "
             "The held-out event is never used to choose anything: the model's IoU is that of the **last** epoch, and the thresholds are "
             "tuned on the training event's pixels (best pooled IoU) and then applied to the held-out event. Water IoU is pooled over all "
             "valid pixels of the held-out event (total intersection over total union), on ETCI's flood label.", "",
             "| train → held out | model | model water IoU | VV threshold IoU | VH threshold IoU | wall min | CPU min | peak GB | GMAC / 256² tile | s / 256² tile (inference incl. loading) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [row(r) for r in rs]
    if any(extras(r) for r in rs):
        lines += ["", "Rows whose model column lists extra options are experiments run with the same budget (`--radiometric`, `--ema`, "
                  "`--drop-rectangles`, `--loss ce_dice` of `bench/etci_benchmark.py`); the rows without them are the default recipe. "
                  "One run each: the per-epoch lists below show how much a single run's last epoch can move."]
    lines += ["", "Per-epoch held-out IoU (for information; not used for selection):", ""]
    for r in rs:
        h = [f"{x['water_iou']:.2f}" for x in r['history']]
        lines.append(f"- `{r['name']}`: " + ", ".join(h))
    (HERE/'RESULTS.md').write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

if __name__ == '__main__': main(sys.argv[1:])
