"""Delivery of a new model version: the canary's judge, the service's own canary and the
KServe rollout, which judge the same way."""
