"""``python -m video3d_zoo.train CONFIG [--set key=value ...] [--resume]`` (also under torchrun)."""

import sys

from .loop import main

if __name__ == "__main__":
    sys.exit(main())
