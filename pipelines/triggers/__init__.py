"""Retraining triggers (manual, schedule, new data, performance degradation, distribution shift)
and the controller that turns them into at most one pipeline run at a time."""
