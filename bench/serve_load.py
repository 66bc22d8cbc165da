#!/usr/bin/env python
"""Load test of floodseg_serve on loopback: N simultaneous uploads of one Sentinel-1 chip, bounded in count and time.

For each --queue value: starts the floodseg_serve command (`python -m floodseg.serve`) as its own process on a free
127.0.0.1 port with a fresh data folder, sends --n uploads of the chip at the same moment from --n threads (one
connection each), polls every accepted job until it is done or failed, reads the server's peak resident memory
(VmHWM from /proc) and stops it. Prints one row per queue size: accepted (202), refused (429), completed, failed, lost
(accepted but neither done nor failed within --timeout), peak RSS, and p50/p95 of the job time (from upload to
finished map), of the mapping alone, and of the upload requests.

    python bench/serve_load.py --model floodseg_run/model [--n 20] [--queue 32 8] [--json out.json]

Without --model: the shipped model ('default') when there is one, else one trained here for a few CPU seconds.
"""
import argparse, json, os, platform, re, subprocess, sys, tempfile, threading, time
from pathlib import Path
import httpx, numpy as np

def peak_rss_mb(pid):
    return int(re.search(r'VmHWM:\s+(\d+) kB', Path(f'/proc/{pid}/status').read_text())[1]) / 1024

def run(model, scene, n, queue, timeout, threads):
    from floodseg.serve import free_port
    port, data = free_port(), Path(tempfile.mkdtemp(prefix='floodseg_load_'))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MPLBACKEND='Agg')
    env.pop('FLOODSEG_TOKEN', None)
    log = open(data.with_suffix('.log'), 'w+')   # not a pipe: a full pipe would block the server
    proc = subprocess.Popen([sys.executable, '-m', 'floodseg.serve', '--model', str(model), '--port', str(port), '--data-dir', str(data),
                             '--queue', str(queue), '--log-level', 'warning'], env=env, stdout=log, stderr=log, text=True)
    url, body = f'http://127.0.0.1:{port}', Path(scene).read_bytes()
    try:
        t0 = time.monotonic()
        while True:
            try: httpx.get(url + '/v1/health', timeout=5); break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() - t0 > 180: raise RuntimeError('the server did not start: ' + Path(log.name).read_text()[-2000:])
                time.sleep(0.2)
        base_mb = peak_rss_mb(proc.pid)
        barrier, answers = threading.Barrier(n), [None] * n
        def upload(i):
            with httpx.Client(base_url=url, timeout=120) as c:
                barrier.wait()
                t = time.monotonic()
                r = c.post('/v1/maps', files=dict(scene=(Path(scene).name, body, 'image/tiff')))
                answers[i] = (r.status_code, r.json(), time.monotonic() - t)
        ts = [threading.Thread(target=upload, args=(i,)) for i in range(n)]
        for t in ts: t.start()
        for t in ts: t.join(timeout)
        accepted = [a[1]['id'] for a in answers if a and a[0] == 202]
        ends, t0 = {}, time.monotonic()
        with httpx.Client(base_url=url, timeout=30) as c:
            while len(ends) < len(accepted) and time.monotonic() - t0 < timeout:
                for jid in accepted:
                    if jid in ends: continue
                    st = c.get(f'/v1/maps/{jid}').json()
                    if st['state'] in ('done', 'failed'): ends[jid] = st
                time.sleep(0.2)
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    done = [s for s in ends.values() if s['state'] == 'done']
    pct = lambda xs, q: round(float(np.percentile(xs, q)), 2) if len(xs) else None
    total, mapping, up = [s['timings']['total_s'] for s in done], [s['timings']['run_s'] for s in done], [a[2] for a in answers if a]
    return dict(uploads=n, queue=queue, accepted=len(accepted), refused_429=sum(a is not None and a[0] == 429 for a in answers),
                other_answers=sorted({a[0] for a in answers if a and a[0] not in (202, 429)}), completed=len(done),
                failed=sum(s['state'] == 'failed' for s in ends.values()), lost=len(accepted) - len(ends),
                idle_rss_mb=round(base_mb), peak_rss_mb=round(rss), job_p50_s=pct(total, 50), job_p95_s=pct(total, 95),
                mapping_p50_s=pct(mapping, 50), mapping_p95_s=pct(mapping, 95), upload_p50_s=pct(up, 50), upload_p95_s=pct(up, 95),
                errors=sorted({s.get('error') for s in ends.values() if s['state'] == 'failed'}))

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', help="model folder (default: the shipped model, else one trained here for a few seconds)")
    p.add_argument('--scene', help='2-band GeoTIFF to upload (default: the embedded Sen1Floods11 chip Nigeria_812045, 512², 1.8 MB)')
    p.add_argument('--n', type=int, default=20, help='simultaneous uploads (at most 64)')
    p.add_argument('--queue', type=int, nargs='+', default=[32, 8], help="the server's --queue, one run each")
    p.add_argument('--timeout', type=float, default=600, help='seconds to wait for the accepted jobs of one run')
    p.add_argument('--threads', type=int, default=1, help="the server's torch threads (OMP_NUM_THREADS)")
    p.add_argument('--json', help='also write the rows here')
    a = p.parse_args()
    if not 1 <= a.n <= 64: sys.exit('--n must be between 1 and 64')
    from floodseg.io import sample_path
    from floodseg.learner import model_path, CONFIG_FILE
    model = a.model or ('default' if (model_path('default')/CONFIG_FILE).exists() else None)
    if model is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent/'tools'))
        from screenshot_serve import tiny_model
        model = tiny_model(Path(tempfile.mkdtemp())/'model')
    scene = a.scene or sample_path('sen1floods11')/'v1.1/data/flood_events/HandLabeled/S1Hand/Nigeria_812045_S1Hand.tif'
    rows = [run(model, scene, a.n, q, a.timeout, a.threads) for q in a.queue]
    cols = ['uploads', 'queue', 'accepted', 'refused_429', 'completed', 'failed', 'lost', 'idle_rss_mb', 'peak_rss_mb',
            'job_p50_s', 'job_p95_s', 'mapping_p50_s', 'mapping_p95_s', 'upload_p50_s', 'upload_p95_s']
    print(f"model {model}, scene {Path(scene).name}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), server threads {a.threads}")
    print('| ' + ' | '.join(cols) + ' |\n|' + '---|' * len(cols))
    for r in rows: print('| ' + ' | '.join(str(r[c]) for c in cols) + ' |')
    for r in rows:
        if r['other_answers'] or r['errors']: print(f"queue {r['queue']}: other answers {r['other_answers']}, errors {r['errors']}")
    if a.json: Path(a.json).write_text(json.dumps(rows, indent=1))
    sys.exit(1 if any(r['lost'] or r['failed'] or r['other_answers'] for r in rows) else 0)

if __name__ == '__main__': main()
