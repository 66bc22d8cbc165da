#!/usr/bin/env python
"""Docs check (run by `.ci/run`), no Quarto needed.

For every notebook under nbs/ (recursive; names starting with `_` or `.` are skipped):
  * run nbdev's doc processing (what `nbdev-docs` feeds to Quarto) into a temp dir; it must not fail;
  * every `show_doc` cell must have produced output;
  * render the page with pandoc to one self-contained HTML file in `_docs/<page>.html` (gitignored);
    pandoc must exit 0, every local image must resolve, and the HTML must hold at least as many <img> as
    the processed notebook has image outputs;
and nbs/sidebar.yml must list exactly the notebooks that exist.

Usage: python tools/check_docs.py [--nbs DIR] [--out DIR] [--workers N] [PAGE ...]
  PAGE: notebook paths relative to nbs/ (default: all).  Exit status 1 on any failure.
"""
import argparse, json, os, re, shutil, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yaml
from nbdev.config import nbpath2html
from nbdocs import (ROOT, nbs_path, list_notebooks, skipped, nbdev_process, quarto_lite, count_image_outputs,
                    showdoc_problems, pick_mimes, ipynb2ast, clean_ast, standalone_flags, run, fm_str)

def sidebar_entries(node):
    "Every file named in a Quarto sidebar `contents` tree (strings, `href:`/`file:` of items and sections)"
    res = []
    if isinstance(node, str): res.append(node)
    elif isinstance(node, list):
        for o in node: res += sidebar_entries(o)
    elif isinstance(node, dict):
        for k in ('href', 'file'):
            if isinstance(node.get(k), str): res.append(node[k])
        if 'contents' in node: res += sidebar_entries(node['contents'])
    return res

def _rel(p:Path):
    try: return p.relative_to(ROOT)
    except ValueError: return p

def check_sidebar(nbs:Path, pages):
    "Errors for notebooks missing from sidebar.yml and sidebar entries naming missing files"
    f = nbs/'sidebar.yml'
    if not f.exists(): return [f'{_rel(f)} is missing']
    try: contents = yaml.safe_load(f.read_text())['website']['sidebar']['contents']
    except Exception as e: return [f'{_rel(f)}: expected website: sidebar: contents: [...] ({e!r})']
    entries = [e for e in sidebar_entries(contents) if not re.match(r'^[a-z]+:', e) and not e.startswith('/')]
    errs, listed = [], set()
    for e in entries:
        p = Path(e)
        if '*' in e: errs.append(f'sidebar.yml: use explicit pages, not globs: {e}'); continue
        if not (nbs/p).exists(): errs.append(f'sidebar.yml names {e}, which does not exist in {_rel(nbs)}/')
        elif skipped(p): errs.append(f'sidebar.yml names {e}, which Quarto/nbdev skip (name starts with _ or .)')
        listed.add(p.as_posix())
    dups = sorted({e for e in entries if entries.count(e) > 1})
    if dups: errs.append(f'sidebar.yml lists more than once: {", ".join(dups)}')
    for p in pages:
        if p.as_posix() not in listed: errs.append(f'{p.as_posix()}: notebook is not listed in {_rel(f)}; add it')
    return errs

# pandoc's own page style is bare; Quarto's theme is not available here. Just enough to read and screenshot.
_HDR_CSS = """<style>
body { max-width: 60em; margin: 0 auto; padding: 1em 2em; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.5; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; }
div.output pre { background: none; border-left: 2px solid lightsalmon; }
table { border-collapse: collapse; } th, td { border: 1px solid #ddd; padding: .2em .5em; }
img { max-width: 100%; height: auto; }
</style>
"""

def render_page(rel:Path, nbs:Path, proc:Path, out:Path, css:Path):
    "Process and render one page. Returns (errors, n_images, html_path)"
    src, pnb = nbs/rel, proc/rel
    ok, log = nbdev_process(src, pnb)
    if not ok:
        hint = ('\n    hint: nbdev runs every cell that has an import statement (and exported/show_doc cells) when building docs;'
                ' put imports in cells of their own (see "Found cells containing imports and other code" above)'
                if 'Found cells containing imports and other code' in log else '')
        return [f'{rel}: nbdev processing failed:\n{_tail(log)}{hint}'], 0, None
    nb = json.loads(pnb.read_text())
    errs = [f'{rel}: show_doc cell {i} produced no output: {s!r}' for i,s in showdoc_problems(nb)]
    nb, fm = quarto_lite(nb, target=None)
    n_img = count_image_outputs(nb)  # before choosing one representation per output
    pick_mimes(nb, 'html')
    work = pnb.parent/(pnb.stem + '_render'); work.mkdir(parents=True, exist_ok=True)
    (work/'_hdr.html').write_text(_HDR_CSS)
    lite = work/rel.name
    lite.write_text(json.dumps(nb))
    # images linked from markdown are relative to the source notebook's folder
    rc, ast, err0 = ipynb2ast(lite, 'media', cwd=work, resource_path=(src.parent, work))
    if rc: return errs + [f'{rel}: pandoc -f ipynb failed (rc={rc}):\n{_tail(err0)}'], n_img, None
    ast = clean_ast(ast)
    _link_pages(ast)
    # same file names as the Quarto site (`output-file` set by nbdev: 00_io.ipynb -> io.html), so links between pages work
    html = out/rel.parent/(fm.get('output-file') or nbpath2html(rel).name); html.parent.mkdir(parents=True, exist_ok=True)
    title = fm_str(fm.get('title')) or rel.stem
    cmd = (['pandoc', '-f', 'json', '-t', 'html', *standalone_flags(), '--toc', f'--css={css}', f'--include-in-header={work/"_hdr.html"}',
            f'--resource-path={os.pathsep.join([str(work), str(src.parent)])}', f'--metadata=title:{title}',
            f'--metadata=pagetitle:{title}', '-o', str(html)])
    if fm.get('description'):   # through a metadata file, so the description's markdown (`code`) renders, as in Quarto's title block
        (work/'_meta.yaml').write_text(yaml.safe_dump(dict(subtitle=fm_str(fm['description'])), allow_unicode=True))
        cmd.append(f'--metadata-file={work/"_meta.yaml"}')
    rc, _, err = run(cmd, cwd=work, input=json.dumps(ast))
    if rc: return errs + [f'{rel}: pandoc -t html failed (rc={rc}):\n{_tail(err)}'], n_img, None
    # local files only: remote images (badges) are not this check's business and CI may be offline
    missing = [l for l in (err0+err).splitlines() if 'ould not fetch' in l and '://' not in l]
    if missing: errs.append(f'{rel}: pandoc could not resolve resources:\n' + '\n'.join(missing))
    n_html = len(re.findall(r'<img\b', html.read_text(errors='replace'), flags=re.I))
    if n_html < n_img: errs.append(f'{rel}: {n_img} image outputs in the processed notebook but only {n_html} <img> in {html}')
    return errs, n_img, html

def _link_pages(ast):
    "Point relative links to notebooks at the rendered pages, as Quarto does"
    def _w(x):
        if isinstance(x, list):
            for o in x: _w(o)
        elif isinstance(x, dict):
            if x.get('t')=='Link':
                u = urlsplit(x['c'][2][0])
                if not (u.scheme or u.netloc) and u.path.endswith('.ipynb'):
                    x['c'][2][0] = urlunsplit(('', '', nbpath2html(Path(u.path)).as_posix(), u.query, u.fragment))
            for v in x.values(): _w(v)
    _w(ast['blocks'])

def _tail(s, n=40): return '\n'.join('    '+l for l in s.strip().splitlines()[-n:])

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('pages', nargs='*', help='notebooks relative to nbs/ (default: all)')
    ap.add_argument('--nbs', type=Path, default=None, help='notebook folder (default: nbs_path from pyproject.toml)')
    ap.add_argument('--out', type=Path, default=ROOT/'_docs', help='where the HTML pages go (default: _docs/)')
    ap.add_argument('--workers', type=int, default=2)
    a = ap.parse_args()
    t0 = time.time()
    if not shutil.which('pandoc'): sys.exit('docs: FAILED: pandoc not found (apt-get install -y pandoc)')
    nbs = (a.nbs or nbs_path()).resolve()
    all_pages = list_notebooks(nbs)
    pages = [Path(p) for p in a.pages] if a.pages else all_pages
    errs = check_sidebar(nbs, all_pages)
    if not (nbs/'nbdev.yml').exists(): errs.append(f'{nbs/"nbdev.yml"} missing (nbdev-readme/nbdev-docs need it)')
    for p in pages:
        if not (nbs/p).exists(): errs.append(f'{p}: no such notebook in {nbs}')
    pages = [p for p in pages if (nbs/p).exists()]
    css = nbs/'styles.css'
    n_proc = n_rend = n_img = 0
    with tempfile.TemporaryDirectory(prefix='check_docs_') as tmp:
        proc = Path(tmp)/'proc'
        with ThreadPoolExecutor(max(1, a.workers)) as ex:
            futs = {p: ex.submit(render_page, p, nbs, proc, a.out.resolve(), css) for p in pages}
            for p,f in futs.items():
                try: e, ni, html = f.result()
                except Exception as ex_: e, ni, html = [f'{p}: unexpected error {ex_!r}'], 0, None
                n_proc += (proc/p).exists()
                n_rend += html is not None
                n_img += ni
                print(f'  {"ok  " if not e else "FAIL"} {p}' + (f' -> {_rel(html)} ({ni} images)' if html else ''))
                errs += e
    for e in errs: print(f'docs: ERROR: {e}', file=sys.stderr)
    if errs: print(f'docs: FAILED with {len(errs)} problem(s), see above', file=sys.stderr)
    print(f'docs: took {time.time()-t0:.0f}s, HTML in {a.out}')
    print(f'docs: {n_proc} pages processed, {n_rend} rendered, {n_img} images')
    sys.exit(1 if errs else 0)

if __name__ == '__main__': main()
