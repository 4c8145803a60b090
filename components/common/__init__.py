"""Pieces shared by the stages: data errors, span I/O, ML Metadata, model I/O, reports."""
