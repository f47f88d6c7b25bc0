"""Weights: the manifest, the download command, and converters into torch state dicts."""
