"""The main job on bundled data: sample spans, the year's replay, its load generator and report."""
