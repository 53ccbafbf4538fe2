"""video3d_zoo: spatiotemporal 3D CNNs for video, with verified pretrained weights.

>>> import video3d_zoo
>>> model = video3d_zoo.create_model("resnet3d_50", num_classes=10)
>>> video3d_zoo.list_models("resnext3d_*")
['resnext3d_101', 'resnext3d_152', 'resnext3d_200', 'resnext3d_50']
>>> video3d_zoo.list_models("r3d_*", pretrained=True)
['r3d_18.k400_16f']

Every registered model also has a factory function of the same name
(``video3d_zoo.resnet3d_50(pretrained=...)``).
"""

from . import models as _models  # noqa: F401  (registers every architecture)
from .api import create_model, load_model, public_factories
from .models.config import INPUT_PRESETS, InputSpec, ModelConfig
from .errors import Video3DZooError
from .version import __version__
from .weights.manifest import list_pretrained
from .weights.importer import import_weights
from .models.registry import get_model_spec
from .weights.catalog import Weights, get_weights, list_models
from .weights.resolve import parse_model_ref
from .weights.loading import from_pretrained, save_pretrained
from .jobs.feature_files import load_features


_FACTORIES = public_factories()
globals().update(_FACTORIES)


def __getattr__(name: str):
    # video3d_zoo.io imports PyAV: reached on first use, so `import video3d_zoo` stays light
    if name == "ClipPreprocessor":
        from .io.transforms import ClipPreprocessor

        return ClipPreprocessor
    raise AttributeError(f"module 'video3d_zoo' has no attribute {name!r}")


__all__ = ["INPUT_PRESETS", "ClipPreprocessor", "InputSpec", "ModelConfig", "Video3DZooError", "Weights",
           "create_model", "from_pretrained", "get_model_spec", "get_weights", "import_weights", "list_models",
           "list_pretrained", "load_features", "load_model", "parse_model_ref", "save_pretrained", "__version__",
           *sorted(_FACTORIES)]
