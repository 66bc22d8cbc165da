"`python -m floodseg.serve`: the `floodseg_serve` command (`floodseg.serve.app.floodseg_serve`). Written by hand, like `__init__.py`."
from floodseg.serve.app import floodseg_serve

floodseg_serve()
