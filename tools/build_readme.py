#!/usr/bin/env python
"""Write README.md (and README_files/) from nbs/index.ipynb without Quarto. README.md is never edited by hand.

Does what `nbdev-readme` does, minus Quarto: nbdev's doc processing of the readme notebook (`readme_nb` in
pyproject.toml), nbdev's README link rewriting (`nbdev.readme_filter.rewrite_links`: links to notebooks become
links to the hosted docs), then pandoc (`-t gfm --wrap=preserve`).  Images (notebook outputs, and local files
linked from markdown) are written to README_files/ with content-hash names and linked relatively, so the result
renders on GitHub and running the script twice gives identical files.

Usage: python tools/build_readme.py [--check]   (--check: exit 1 if README.md/README_files would change)
"""
import argparse, hashlib, json, shutil, sys, tempfile
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbdocs import ROOT, nbdev_process, quarto_lite, ipynb2ast, clean_ast, run, fm_str, md2blocks

MEDIA = 'README_files'

def _local_images(ast, nbdir:Path, media:Path):
    "Copy local images linked from markdown into `media` (content-hash names) and point the links there"
    def _w(x):
        if isinstance(x, list):
            for o in x: _w(o)
        elif isinstance(x, dict):
            if x.get('t')=='Image':
                tgt = x['c'][2][0]
                u = urlsplit(tgt)
                if not (u.scheme or u.netloc or tgt.startswith(MEDIA+'/')):
                    f = (nbdir/u.path).resolve()
                    if not f.exists(): raise FileNotFoundError(f'image {tgt!r} in the readme notebook not found ({f})')
                    name = hashlib.sha1(f.read_bytes()).hexdigest() + f.suffix.lower()
                    media.mkdir(exist_ok=True)
                    shutil.copyfile(f, media/name)
                    x['c'][2][0] = f'{MEDIA}/{name}'
            for v in x.values(): _w(v)
    _w(ast['blocks'])

def build(root:Path, out_dir:Path):
    "Render the readme notebook into `out_dir`/README.md (+ `out_dir`/README_files). Returns the written paths"
    from nbdev.config import get_config
    from nbdev.readme_filter import rewrite_links
    cfg = get_config(root)
    src = Path(cfg.nbs_path)/cfg.readme_nb
    if not src.exists(): sys.exit(f'readme: {src} not found')
    with tempfile.TemporaryDirectory(prefix='build_readme_') as tmp:
        tmp = Path(tmp)
        ok, log = nbdev_process(src, tmp/'proc'/src.name)
        if not ok: sys.exit(f'readme: nbdev processing of {src} failed:\n{log}')
        nb, fm = quarto_lite(json.loads((tmp/'proc'/src.name).read_text()), target='gfm')
        lite = tmp/src.name
        lite.write_text(json.dumps(nb))
        shutil.rmtree(out_dir/MEDIA, ignore_errors=True)
        rc, ast, err = ipynb2ast(lite, MEDIA, cwd=out_dir, resource_path=(src.parent,))
        if rc: sys.exit(f'readme: pandoc -f ipynb failed:\n{err}')
    _local_images(ast, src.parent, out_dir/MEDIA)
    if cfg.get('doc_host'):  # as nbdev-readme: relative links to pages become links to the hosted docs
        rewrite_links(ast['blocks'], cfg.doc_url, Path(cfg.readme_nb).parent.as_posix())
    ast = clean_ast(ast, unwrap_divs=True)
    head = f'# {fm_str(fm.get("title")) or cfg.lib_name}\n\n'
    if fm.get('description'): head += f'> {fm_str(fm["description"])}\n'
    ast['blocks'] = md2blocks(head) + ast['blocks']
    rc, md, err = run(['pandoc', '-f', 'json', '-t', 'gfm', '--wrap=preserve', '-o', 'README.md'],
                      cwd=out_dir, input=json.dumps(ast))
    if rc: sys.exit(f'readme: pandoc -t gfm failed:\n{err}')
    media = sorted((out_dir/MEDIA).rglob('*')) if (out_dir/MEDIA).exists() else []
    return [out_dir/'README.md'] + [f for f in media if f.is_file()]

def _snapshot(d:Path):
    fs = [d/'README.md'] + (sorted((d/MEDIA).rglob('*')) if (d/MEDIA).exists() else [])
    return {str(f.relative_to(d)): f.read_bytes() for f in fs if f.is_file()}

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--check', action='store_true', help='only check that README.md is up to date')
    a = ap.parse_args()
    if a.check:
        with tempfile.TemporaryDirectory(prefix='readme_chk_') as t:
            build(ROOT, Path(t))
            new, old = _snapshot(Path(t)), (_snapshot(ROOT) if (ROOT/'README.md').exists() else {})
            if new != old:
                diff = sorted(set(new) ^ set(old) | {k for k in set(new) & set(old) if new[k]!=old[k]})
                sys.exit(f'readme: README.md is out of date (run python tools/build_readme.py): {", ".join(diff)}')
            print('readme: README.md is up to date')
        return
    for f in build(ROOT, ROOT): print(f'readme: wrote {f.relative_to(ROOT)} ({f.stat().st_size} bytes)')

if __name__ == '__main__': main()
