"""Pipeline stages of continuous training: each a typed logic module and a thin KFP adapter."""

__version__ = "0.1.0"
