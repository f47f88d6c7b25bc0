"""Fast style training (Johnson, Alahi & Fei-Fei 2016): plain torch, no HTTP or queue knowledge.

A TransformerNet learns one painting's style from many content photos through a frozen loss
network; the job runners own scheduling and persistence, the CLI and the API own files.
"""

from app.training.engine import Progress, TrainResult, train
from app.training.options import TRAINING_BACKBONES, TrainOptions

__all__ = ["TRAINING_BACKBONES", "Progress", "TrainOptions", "TrainResult", "train"]
