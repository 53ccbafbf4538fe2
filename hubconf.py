"""torch.hub entry points: every registered model and its aliases.

    torch.hub.load("OWNER/REPO", "resnext101_3d", pretrained=True)    # the GitHub repository holding this file
    torch.hub.load(".", "resnet10_3d", source="local", pretrained="synthetic_motion")  # in a clone's root

Each entry point is ``video3d_zoo.create_model(name, pretrained, num_classes, in_chans, **kwargs)``, so
``pretrained`` finds the weights where ``create_model`` does: embedded in the package, installed by
``video3d-zoo import`` (the original checkpoints, once), or published on the Hugging Face Hub.
"""

dependencies = ["torch", "numpy", "safetensors", "huggingface_hub"]

from video3d_zoo.api import public_factories as _public_factories  # noqa: E402

globals().update(_public_factories(include_aliases=True))
