"""torch.hub entry points: every registered model and its aliases.

    torch.hub.load("<org>/video3d_zoo", "resnext101_3d", pretrained=True)

Each entry point is ``video3d_zoo.create_model(name, pretrained, num_classes, in_chans, **kwargs)``, so
``pretrained`` finds the weights where ``create_model`` does: embedded in the package, installed by
``video3d-zoo import`` (the original checkpoints, once), or published on the Hugging Face Hub.
"""

dependencies = ["torch", "numpy", "safetensors", "huggingface_hub"]

from video3d_zoo.api import public_factories as _public_factories  # noqa: E402

globals().update(_public_factories(include_aliases=True))
