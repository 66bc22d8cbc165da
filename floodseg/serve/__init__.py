"""`floodseg_serve`: flood maps over HTTP. Three modules, each exported from its notebook: `jobs` (nbs/14a_serve_jobs.ipynb: jobs on
disk, the bounded queue and its worker; no HTTP), `upload` (nbs/14b_serve_upload.ipynb: the streamed multipart upload and its checks)
and `app` (nbs/14c_serve.ipynb: the FastAPI app, its routes and token, the web page, the `floodseg_serve` command).

Written by hand, not exported: nbdev 3 writes one module per notebook (`#| default_exp`), and a cell sent to another module
(`#| export serve.__init__`) is appended to that file at every `nbdev-export`. This file only re-exports the public names."""
from . import jobs, upload, app
from .jobs import *
from .upload import *
from .app import *

__all__ = jobs.__all__ + upload.__all__ + app.__all__
