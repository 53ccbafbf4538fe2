"""``python -m video3d_zoo.train CONFIG [--set key=value ...] [--resume]``: ``video3d-zoo train`` (also under torchrun)."""

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
