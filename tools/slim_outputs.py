#!/usr/bin/env python
"""Shrink the PNG figures saved in the notebooks' outputs (the notebooks are the docs, and they live in git).

Each embedded PNG wider than --max-width pixels is scaled down to it, and every PNG is re-encoded (with an exact
palette when it has at most 256 colours), and kept only when that makes it smaller; a figure
still larger than --max-kb (noise-like SAR texture does not compress losslessly) becomes a JPEG of quality 85.

    python tools/slim_outputs.py            # all notebooks under nbs/
    python tools/slim_outputs.py --check    # exit 1 if any figure is larger than --max-kb
"""
import argparse, base64, io, json, sys
from pathlib import Path
from PIL import Image

def slim(b64, max_width, max_kb):
    "(mime type, base64) of the smaller encoding: PNG, or JPEG (quality 85) for a figure still over `max_kb` as PNG (SAR texture)." 
    raw = base64.b64decode(b64)
    im = Image.open(io.BytesIO(raw))
    im.load()
    if im.width > max_width: im = im.resize((max_width, round(im.height * max_width / im.width)), Image.LANCZOS)
    im = im.convert('RGB')
    colours = im.getcolors(256)          # None when the figure has more than 256 colours
    out = io.BytesIO()
    if colours is not None: im.quantize(len(colours), method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(out, 'PNG', optimize=True)   # lossless palette
    else: im.save(out, 'PNG', optimize=True)
    new, mime = out.getvalue(), 'image/png'
    if len(new) > max_kb * 1024:
        out = io.BytesIO(); im.save(out, 'JPEG', quality=85, optimize=True); new, mime = out.getvalue(), 'image/jpeg'
    return (mime, base64.b64encode(new).decode()) if len(new) < len(raw) else ('image/png', b64)

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--max-width', type=int, default=1100)
    p.add_argument('--max-kb', type=int, default=800)
    p.add_argument('--check', action='store_true')
    a = p.parse_args()
    root = Path(__file__).resolve().parent.parent/'nbs'
    total0 = total1 = 0; big = []
    for nb in sorted(root.rglob('*.ipynb')):
        text = nb.read_text(); d = json.loads(text); changed = False
        for c in d['cells']:
            for o in c.get('outputs', []):
                data = o.get('data', {})
                if 'image/png' not in data: continue
                b64 = data['image/png'] if isinstance(data['image/png'], str) else ''.join(data['image/png'])
                kb = len(b64) * 3 / 4 / 1024
                if a.check:
                    if kb > a.max_kb: big.append(f"{nb.relative_to(root)} cell {c.get('id')}: {kb:.0f} KB")
                    continue
                mime, new = slim(b64, a.max_width, a.max_kb)
                if new != b64:
                    del data['image/png']; data[mime] = new; changed = True
        if changed:
            nb.write_text(json.dumps(d, indent=1, ensure_ascii=False) + '\n')
        total0 += len(text); total1 += nb.stat().st_size
    if a.check:
        print('\n'.join(big) or f'every figure is at most {a.max_kb} KB'); sys.exit(1 if big else 0)
    print(f"notebooks: {total0 / 2**20:.1f} MB -> {total1 / 2**20:.1f} MB")

if __name__ == '__main__': main()
