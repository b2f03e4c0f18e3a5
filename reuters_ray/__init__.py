"""reuters-ray: fine-tune small BERT encoders for news-topic classification as a Ray job.

Layers, each a module with one job: data (sources -> TextDataset) -> preprocess (named filters) ->
features (class weights, tokenization). Nothing here imports Ray.
"""

from reuters_ray.config import DataConfig
from reuters_ray.data import TextDataset, load_dataset
from reuters_ray.errors import DataError

__version__ = "0.1.0"
__all__ = ["DataConfig", "DataError", "TextDataset", "load_dataset", "__version__"]
