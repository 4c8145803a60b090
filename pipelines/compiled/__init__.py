"""The compiled pipeline spec (KFP IR YAML), kept fresh by a test."""
