"""`ct schema infer`: a TFDV schema from spans, to review and commit into the catalogue."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import tensorflow_data_validation as tfdv

from components.common.datasets import load_dataset
from components.common.spans import SpanFolder, read_spans
from components.ingest.logic import examples_with_features
from components.statistics.logic import statistics_of_dataframe
from components.validate_data.logic import DOMAIN_MARGIN, columns_that_may_appear, infer_schema
from features.sources import FEATURES_FOLDER


def infer_schema_from_spans(dataset: str, span_folders: list[Path], out: Path) -> str:
    """Infers the schema of the spans' examples (joined with the feature store as ingest joins
    them), with each span's presence as the tolerance and proposed numeric domains, writes it
    to `out`; says what it did and what to review."""
    config = load_dataset(dataset)
    spans = [read_spans([SpanFolder(path.name, path)]) for path in span_folders]
    if config.feature_store:
        spans = [
            examples_with_features(span, config, path.parent / FEATURES_FOLDER, str(path))[0]
            for span, path in zip(spans, span_folders)
        ]
    frame = pd.concat(spans, ignore_index=True)
    schema = infer_schema(
        statistics_of_dataframe(frame),
        config.categorical_features,
        config.label,
        [statistics_of_dataframe(span) for span in spans],
        known_columns=[c for c in (config.key, *config.features, config.label) if c],
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(schema, str(out))
    optional = columns_that_may_appear(schema)
    return (
        f"{out}: {len(schema.feature)} features from {len(frame)} rows; "
        f"numeric domains proposed as the observed range widened by {DOMAIN_MARGIN:.0%} of its width on each side: "
        "replace them with physical or business bounds; "
        + (
            f"columns that may appear and are not trained on: {', '.join(optional)} "
            "(delete a column's entry to make it stop the run); "
            if optional
            else ""
        )
        + f"review it, then commit it as {config.schema_path.name}"
    )
