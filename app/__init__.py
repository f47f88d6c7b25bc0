"""Atelier: neural style transfer as a REST service."""

__version__ = "0.1.0"
