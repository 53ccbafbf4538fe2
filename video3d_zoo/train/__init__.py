"""Training, evaluation and data sets for the zoo's models (imported only when used).

* :func:`train` - ``video3d-zoo train CONFIG [--set key=value ...] [--resume]``
  (also ``python -m video3d_zoo.train``); ``CONFIG`` is a recipe name (:mod:`.recipes`, ``train --list``),
  a config shipped in ``video3d_zoo/configs/`` or a file.
* :func:`evaluate` - clip and video accuracy, per-class accuracy, confusion matrix.
* :func:`~video3d_zoo.jobs.synthetic.make_synthetic` - the synthetic motion data set.
"""

from __future__ import annotations

from ..errors import DataError, EvalFailed, TrainConfigError, TrainingDivergedError
from .config import load_config
from .config_schema import TrainConfig
from .evaluate import evaluate
from .loop import train
from .readers import read_folder, read_hmdb51, read_kinetics, read_list, read_ucf101
from .videolist import DataIssues, VideoItem, VideoList

__all__ = ["train", "evaluate", "load_config", "TrainConfig", "TrainConfigError", "TrainingDivergedError",
           "DataError", "EvalFailed", "DataIssues", "VideoItem", "VideoList", "read_kinetics", "read_ucf101",
           "read_hmdb51", "read_folder", "read_list"]
