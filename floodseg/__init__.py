__version__ = "0.1.0"

import warnings
# fastai's imports call `torch.jit.script`, which torch 2.15 flags as deprecated on every start; it says nothing about the user's data
warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
