"""The continuous-training pipeline: configuration, wiring, compilation and the `ct` command."""
