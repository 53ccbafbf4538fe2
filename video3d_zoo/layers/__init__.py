"""Building blocks shared by every model family.

* :class:`VideoClassifier` - the model interface every zoo model implements, at timm's level
  (``forward`` / ``forward_features`` / ``forward_head`` / ``forward_intermediates`` /
  ``get_classifier`` / ``reset_classifier`` / ``set_grad_checkpointing`` / ``group_matcher`` /
  ``no_weight_decay`` / ``feature_info`` / ``pretrained_cfg`` / features-only backbones /
  input checking with a stated minimum size); see docs/model-interface.md.
* :class:`FeatureInfo` / :class:`FeatureInfoList` - what each stage outputs (channels, temporal
  and spatial reduction), with timm's ``channels()`` / ``reduction()`` accessors.
* :class:`DropPath` - stochastic depth for the residual families.
* :class:`ResNetTrunk` - stem + four residual stages + head, parametrised by a block factory;
  the ResNet, pre-activation ResNet and R(2+1)D families subclass it.
* :class:`ZeroPadShortcut` - the parameter-free shortcut "A" of the 2017 ResNet-18/34 weights.
* :func:`adapt_input_conv` - the rule that turns RGB stem weights into 1-, 2- or N-channel ones.

Parameter names follow the 2020 3D-ResNets-PyTorch layout (``conv1``, ``bn1``, ``layerN.M.*``,
``downsample.0/1``, ``fc``), so checkpoints of that release load without renaming.

The pieces live in :mod:`.classifier`, :mod:`.features`, :mod:`.regularize` and :mod:`.resnet`;
everything is importable from here.
"""

from __future__ import annotations

from .classifier import (KEEP, POOL_TYPES, Triple, VideoClassifier, check_global_pool, min_length, triple)
from .features import (FeatureInfo, FeatureInfoList, take_indices)
from .regularize import (DropPath, PrunedModule, drop_path, drop_path_rates, make_drop_path)
from .resnet import (RESNET_DEPTHS, ConvBnShortcut, ResNetTrunk, ZeroPadShortcut, adapt_input_conv, conv_bn_shortcut,
                     init_conv_bn, make_shortcut)

__all__ = ["ConvBnShortcut", "DropPath", "FeatureInfo", "FeatureInfoList", "KEEP", "POOL_TYPES", "PrunedModule",
           "RESNET_DEPTHS", "ResNetTrunk", "Triple", "VideoClassifier", "ZeroPadShortcut", "adapt_input_conv",
           "check_global_pool", "conv_bn_shortcut", "drop_path", "drop_path_rates", "init_conv_bn", "make_drop_path",
           "make_shortcut", "min_length", "take_indices", "triple"]
