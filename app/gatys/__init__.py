"""Gatys-style optimisation engine: plain torch, no HTTP, queue or settings knowledge.

The job runners own scheduling and persistence; this package only turns a content image and
style images into a stylised image, reporting progress and honouring cancellation as it goes.
"""

from app.gatys.optimize import Cancelled, GatysOptions, Progress, run
from app.perceptual.backbones import (
    BACKBONE_NAMES,
    Backbone,
    BackboneUnavailable,
    LossWeights,
    load_backbone,
)
from app.perceptual.losses import content_loss, gram_matrix, style_loss, total_variation_loss

__all__ = [
    "BACKBONE_NAMES",
    "Backbone",
    "BackboneUnavailable",
    "Cancelled",
    "GatysOptions",
    "LossWeights",
    "Progress",
    "content_loss",
    "gram_matrix",
    "load_backbone",
    "run",
    "style_loss",
    "total_variation_loss",
]
