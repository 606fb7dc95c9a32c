"""Datasets, preprocessing into the memory-mapped store, and the training views over it."""
