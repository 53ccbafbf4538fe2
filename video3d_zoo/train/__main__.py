"""``python -m video3d_zoo.train CONFIG [...]``: the ``video3d-zoo train`` command (also under torchrun)."""

import sys

from ..cli.commands import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
