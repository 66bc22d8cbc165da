"""Shared helpers for `check_docs.py` and `build_readme.py`: build docs pages WITHOUT Quarto.

Pipeline for one notebook (mirrors what `nbdev-docs`/`nbdev-readme` do before handing over to Quarto):

1. `nbdev_process`: nbdev's own per-notebook processing step, i.e. exactly the call `nbdev.serve.proc_nbs` maps
   over every notebook (`nbdev.serve_drv.main((src, dst, FilterDefaults))`): frontmatter, `show_doc` insertion and
   execution, removal of `#| export`/`#| hide` cells, links, ...  Run in a subprocess per notebook (isolation;
   `show_doc` executes exported cells and imports).
2. `quarto_lite`: the few Quarto cell options that Quarto itself would apply (`include`, `echo`, `output`), strip the
   remaining `#|` lines, and pull the YAML frontmatter (raw cell) out into a dict.
3. pandoc: `-f ipynb -t json --extract-media=DIR`, small AST clean-ups in Python (`clean_ast`), then json -> html/gfm.
"""
import json, os, re, subprocess, sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

def nbs_path():
    "The project's notebook folder (`nbs_path` in pyproject.toml)"
    from nbdev.config import get_config
    return Path(get_config(ROOT).nbs_path)

def skipped(rel:Path):
    "nbdev/Quarto skip any file or folder whose name starts with `_` or `.`"
    return any(p.startswith(('_', '.')) for p in rel.parts)

def list_notebooks(path:Path):
    "All doc notebooks under `path`, recursively, as paths relative to `path`, sorted"
    return sorted(p.relative_to(path) for p in path.rglob('*.ipynb') if not skipped(p.relative_to(path)))

_PROC = """
import sys
from pathlib import Path
import nbdev.serve_drv
from nbdev.processors import FilterDefaults
nbdev.serve_drv.main((Path(sys.argv[1]), Path(sys.argv[2]), FilterDefaults))
"""

def nbdev_process(src:Path, dst:Path, timeout=1800):
    "Run nbdev's doc processors on notebook `src`, writing `dst`. Returns (ok, log)"
    dst.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, 'MPLBACKEND': os.environ.get('MPLBACKEND', 'Agg')}
    # cwd=ROOT: nbdev's processors call bare `get_config()`, which finds pyproject.toml from the cwd
    r = subprocess.run([sys.executable, '-c', _PROC, str(src), str(dst)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return r.returncode==0 and dst.exists(), (r.stdout + r.stderr)

def src_text(s): return ''.join(s) if isinstance(s, list) else (s or '')

_re_fm = re.compile(r'^\s*---\s*\n(.*?)\n---\s*$', re.DOTALL)
_re_dir = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

def cell_directives(cell):
    "Leading `#| key: value` lines of a code cell, as a dict"
    res = {}
    for l in src_text(cell.get('source')).splitlines():
        if not l.strip(): continue
        m = _re_dir.match(l)
        if not m: break
        res[m.group(1)] = m.group(2).strip('\'"')
    return res

def strip_directives(src):
    lines = src_text(src).splitlines()
    while lines and (_re_dir.match(lines[0]) or re.match(r'^\s*#\|', lines[0])): lines.pop(0)
    return '\n'.join(lines)

def _false(v): return str(v).strip().lower() in ('false', 'no', '0')

_IMGS = ['image/svg+xml', 'image/png', 'image/jpeg', 'image/gif', 'image/webp']
MIME_PRIORITY = {  # what Jupyter/Quarto show when an output offers several representations
    'html': _IMGS + ['text/html', 'text/markdown', 'text/latex', 'text/plain'],
    'gfm':  _IMGS + ['text/markdown', 'text/html', 'text/plain'],
}

def pick_mime(out:dict, target:str):
    "Keep only the best representation of a display/execute_result output: pandoc's ipynb reader would pick for the" \
    " *writer* format, and we go through `-t json` first, where it would always pick text/plain"
    data = out.get('data')
    if not data or len(data) < 2: return
    best = next((m for m in MIME_PRIORITY[target] if m in data), None)
    if best: out['data'] = {best: data[best]}

def pick_mimes(nb:dict, target='html'):
    for c in nb['cells']:
        if c['cell_type']=='code' and c.get('execution_count') is None: c['execution_count'] = 0
        for o in c.get('outputs', []):
            pick_mime(o, target)
            # pandoc 2.17 rejects `execution_count: null` on outputs, which nbdev-clean writes
            if o.get('output_type')=='execute_result' and o.get('execution_count') is None: o['execution_count'] = 0
    return nb

def quarto_lite(nb:dict, target='html'):
    "Apply the Quarto cell options nbdev leaves for Quarto; return (nb, frontmatter dict). Modifies `nb`."
    fm, cells = {}, []
    for i,c in enumerate(nb['cells']):
        if c['cell_type']=='raw':
            m = _re_fm.match(src_text(c.get('source')))
            if m and not fm:
                fm = yaml.safe_load(m.group(1)) or {}
                continue
        if c['cell_type']=='code':
            d = cell_directives(c)
            if _false(d.get('include', True)): continue
            c['source'] = '' if _false(d.get('echo', True)) else strip_directives(c['source'])
            if _false(d.get('output', True)): c['outputs'] = []
        cells.append(c)
    nb['cells'] = cells
    if target: pick_mimes(nb, target)
    return nb, fm

def count_image_outputs(nb:dict):
    "Number of outputs that carry an image (png/jpeg/svg/gif...)"
    return sum(any(k.startswith('image/') for k in o.get('data', {}))
               for c in nb['cells'] if c['cell_type']=='code' for o in c.get('outputs', []))

_re_showdoc = re.compile(r'^show_doc\(', re.MULTILINE)

def showdoc_problems(nb:dict):
    "Indices of `show_doc` cells in a processed notebook that produced no (or empty) output"
    bad = []
    for i,c in enumerate(nb['cells']):
        if c['cell_type']!='code' or not _re_showdoc.search(strip_directives(c.get('source'))): continue
        txt = ''.join(src_text(o.get('data', {}).get(k)) for o in c.get('outputs', [])
                      for k in ('text/markdown', 'text/html', 'text/plain'))
        if not txt.strip(): bad.append((i, strip_directives(c.get('source'))))
    return bad

def run(cmd, cwd=None, input=None):
    r = subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr

def pandoc_version():
    out = run(['pandoc', '--version'])[1]
    return tuple(int(x) for x in re.search(r'pandoc\S*\s+([\d.]+)', out).group(1).split('.')[:3])

def standalone_flags():
    "Single-file HTML: `--embed-resources` appeared in pandoc 2.19, `--self-contained` before (Debian 12: 2.17)"
    return ['--standalone', '--embed-resources'] if pandoc_version() >= (2, 19) else ['--standalone', '--self-contained']

def ipynb2ast(nb_file:Path, media_dir:str, cwd:Path, resource_path=()):
    "pandoc ipynb -> json AST, extracting output images into `media_dir` (relative to `cwd`). Returns (rc, ast, stderr)"
    cmd = ['pandoc', '-f', 'ipynb', '-t', 'json', f'--extract-media={media_dir}', str(nb_file)]
    if resource_path: cmd.append('--resource-path=' + os.pathsep.join(str(p) for p in resource_path))
    rc, out, err = run(cmd, cwd=cwd)
    return rc, (json.loads(out) if rc==0 else None), err

def md2blocks(md:str):
    "Parse markdown with pandoc into AST blocks"
    rc, out, err = run(['pandoc', '-f', 'markdown', '-t', 'json'], input=md)
    if rc: raise RuntimeError(f'pandoc could not parse markdown output:\n{err}')
    return json.loads(out)['blocks']

def _walk_blocks(blocks, unwrap_divs):
    res = []
    for b in blocks:
        t = b.get('t')
        # pandoc 2.17 keeps `text/markdown` outputs (e.g. `show_doc`) as a raw markdown block, which the html/gfm
        # writers drop; Quarto renders them as markdown, so parse them
        if t=='RawBlock' and b['c'][0]=='markdown':
            res.extend(_walk_blocks(md2blocks(b['c'][1]), unwrap_divs)); continue
        if t=='CodeBlock' and not b['c'][1].strip(): continue  # `echo: false` cells
        if t=='RawBlock' and b['c'][0] in ('ipynb', 'openxml', 'latex'): continue
        if t=='Div':
            inner = _walk_blocks(b['c'][1], unwrap_divs)
            if not inner: continue
            # markdown cells are unwrapped so that their headings reach pandoc's --toc
            if unwrap_divs or {'cell', 'markdown'} <= set(b['c'][0][1]): res.extend(inner); continue
            b['c'][1] = inner
        elif t=='BlockQuote': b['c'] = _walk_blocks(b['c'], unwrap_divs)
        res.append(b)
    return res

def clean_ast(ast:dict, unwrap_divs=False):
    "Drop empty code blocks (hidden sources) and non-html raw cells; optionally unwrap the cell/output Divs (for gfm)"
    ast['blocks'] = _walk_blocks(ast['blocks'], unwrap_divs)
    return ast

def images_in_ast(ast):
    "All image targets in a pandoc AST"
    res = []
    def _w(x):
        if isinstance(x, list):
            for o in x: _w(o)
        elif isinstance(x, dict):
            if x.get('t')=='Image': res.append(x['c'][2][0])
            for v in x.values(): _w(v)
    _w(ast['blocks'])
    return res

def fm_str(v): return '' if v is None else str(v)
