"""Model families; importing this package registers every architecture and family.

A family is one module here: its builders (``@register_model``) and, next to them, its
:class:`~video3d_zoo.models.registry.FamilySpec` (``register_family``).  Import order is the order of
the docs' sections.
"""

from . import resnet3d  # noqa: F401
from . import preact_resnet3d  # noqa: F401
from . import densenet3d  # noqa: F401
from . import r2plus1d  # noqa: F401
from . import torchvision_video  # noqa: F401
from . import c3d  # noqa: F401
from .densenet3d import DenseNet3d
from .preact_resnet3d import PreActResNet3d
from .r2plus1d import R2Plus1d
from .resnet3d import ResNet3d

__all__ = ["DenseNet3d", "PreActResNet3d", "R2Plus1d", "ResNet3d"]
