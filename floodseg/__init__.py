__version__ = "0.1.0"

import warnings
# fastai's imports call `torch.jit.script`, which torch 2.15 flags as deprecated on every start; it says nothing about the user's data
warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)

def __getattr__(name):
    "`floodseg.map_flood` without importing torch and fastai on `import floodseg` (PEP 562)."
    if name == 'map_flood':
        from .cli import map_flood
        return map_flood
    raise AttributeError(f"module 'floodseg' has no attribute {name!r}")
