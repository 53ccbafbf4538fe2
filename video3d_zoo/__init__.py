"""video3d_zoo: spatiotemporal 3D CNNs for video, with verified pretrained weights."""
from .registry import list_models
from . import models
