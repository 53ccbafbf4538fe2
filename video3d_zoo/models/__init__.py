"""Model families; importing this package registers every architecture."""

from . import densenet3d, preact_resnet3d, r2plus1d, resnet3d  # noqa: F401
from .densenet3d import DenseNet3d
from .preact_resnet3d import PreActResNet3d
from .r2plus1d import R2Plus1d
from .resnet3d import ResNet3d

__all__ = ["DenseNet3d", "PreActResNet3d", "R2Plus1d", "ResNet3d"]
