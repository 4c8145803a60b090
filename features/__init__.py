"""The feature store: flight features defined once (Feast), joined point-in-time correctly
for training (features/joins.py) and looked up online for serving (features/store.py)."""
