"""``python -m video3d_zoo``: the ``video3d-zoo`` command line (:mod:`.cli`)."""

import sys

from .cli.commands import run

sys.exit(run())
