"""Learned reconstruction maps (Flax Linen)."""
