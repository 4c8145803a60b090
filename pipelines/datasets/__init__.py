"""Dataset configs (YAML) and their committed, reviewed TFDV schemas."""
