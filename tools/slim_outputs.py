#!/usr/bin/env python
"""Shrink the PNG figures saved in the notebooks' outputs (the notebooks are the docs, and they live in git).

Each embedded figure wider than --max-width pixels (or taller than 1000) is scaled down to fit, and every PNG is re-encoded (with an exact
palette when it has at most 256 colours), and kept only when that makes it smaller; a figure
still larger than --max-kb (noise-like SAR texture does not compress losslessly) becomes a JPEG (quality 82, or 70 or 55 if still too large). JPEG outputs already in a notebook are scaled down the same way.

    python tools/slim_outputs.py            # all notebooks under nbs/
    python tools/slim_outputs.py --check    # exit 1 if any figure is larger than 1.5 × --max-kb, or nbs/ holds 5 MB or more
"""
import argparse, base64, io, json, sys
from pathlib import Path
from PIL import Image

MAX_HEIGHT = 1000   # pixels: a tall figure (many rows of tiles) is scaled down to this height
MAX_NBS_MB = 5      # the notebooks are the docs and live in git: nbs/ (notebooks and images) stays under this

def needs_work(b64, max_width, max_kb):
    "Is a figure too wide, too tall or too large?"
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    return im.width > max_width or im.height > MAX_HEIGHT or len(b64) * 3 / 4 > max_kb * 1024

def slim(b64, max_width, max_kb):
    "(mime type or None if unchanged, base64) of the smaller encoding: PNG, or JPEG for a figure still over `max_kb` as PNG (SAR texture)." 
    raw = base64.b64decode(b64)
    im = Image.open(io.BytesIO(raw))
    im.load()
    f = max(im.width / max_width, im.height / MAX_HEIGHT)
    if f > 1: im = im.resize((round(im.width / f), round(im.height / f)), Image.LANCZOS)
    im = im.convert('RGB')
    colours = im.getcolors(256)          # None when the figure has more than 256 colours
    out = io.BytesIO()
    if colours is not None: im.quantize(len(colours), method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(out, 'PNG', optimize=True)   # lossless palette
    else: im.save(out, 'PNG', optimize=True)
    new, mime = out.getvalue(), 'image/png'
    if len(new) > max_kb * 1024:
        for q in (82, 70, 55):   # a tall figure of SAR texture may need a lower quality
            out = io.BytesIO(); im.save(out, 'JPEG', quality=q, optimize=True); new, mime = out.getvalue(), 'image/jpeg'
            if len(new) <= max_kb * 1024: break
    return (mime, base64.b64encode(new).decode()) if len(new) < len(raw) else (None, b64)

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--max-width', type=int, default=600)
    p.add_argument('--max-kb', type=int, default=60)
    p.add_argument('--check', action='store_true')
    a = p.parse_args()
    root = Path(__file__).resolve().parent.parent/'nbs'
    total0 = total1 = 0; big = []
    for nb in sorted(root.rglob('*.ipynb')):
        text = nb.read_text(); d = json.loads(text); changed = False
        for c in d['cells']:
            for o in c.get('outputs', []):
                data = o.get('data', {})
                mime0 = 'image/png' if 'image/png' in data else 'image/jpeg' if 'image/jpeg' in data else None
                if mime0 is None: continue
                b64 = data[mime0] if isinstance(data[mime0], str) else ''.join(data[mime0])
                kb = len(b64) * 3 / 4 / 1024
                if a.check:
                    if kb > 1.5 * a.max_kb: big.append(f"{nb.relative_to(root)} cell {c.get('id')}: {kb:.0f} KB")
                    continue
                if mime0 == 'image/jpeg' and not needs_work(b64, a.max_width, a.max_kb): continue   # JPEG again would only lose quality
                mime, new = slim(b64, a.max_width, a.max_kb)
                if new != b64:
                    del data[mime0]; data[mime] = new; changed = True
        if changed:
            nb.write_text(json.dumps(d, indent=1, ensure_ascii=False) + '\n')
        total0 += len(text); total1 += nb.stat().st_size
    if a.check:
        mb = sum(f.stat().st_size for f in root.rglob('*') if f.is_file()) / 2**20
        if mb >= MAX_NBS_MB: big.append(f"nbs/ holds {mb:.1f} MB (goal: under {MAX_NBS_MB} MB)")
        print('\n'.join(big) or f'every figure is at most {a.max_kb} KB; nbs/ holds {mb:.1f} MB'); sys.exit(1 if big else 0)
    print(f"notebooks: {total0 / 2**20:.1f} MB -> {total1 / 2**20:.1f} MB")

if __name__ == '__main__': main()
