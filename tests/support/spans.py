"""Spans of real flights written as they arrive, with the feature store's tables beside them."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from features.sources import FEATURES_FOLDER, write_sources
from pipelines.demo.sample_data import Span, write_span


def write_month(data_root: Path, month: str, frame: pd.DataFrame, file_format: str = "parquet") -> Path:
    """Writes a span, and the feature store's sources beside it if they are not there yet."""
    if not (data_root / FEATURES_FOLDER).is_dir():
        shutil.copytree(feature_tables_folder(), data_root / FEATURES_FOLDER)
    return write_span(data_root, Span(month, frame, 0, ""), file_format)


@functools.lru_cache(maxsize=1)
def feature_tables_folder() -> Path:
    """The feature tables of 2013, written once per test session."""
    folder = Path(tempfile.mkdtemp(prefix="ct-features-"))
    folder.chmod(0o755)  # as `ct data` leaves it (mkdtemp's 0700 would keep a step's container user out)
    write_sources(folder)
    return folder
