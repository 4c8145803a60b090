"""The prediction service: TF Serving REST and Open Inference Protocol v2 over the model repository,
with hot swap, canary, feedback, a request log and Prometheus metrics."""
