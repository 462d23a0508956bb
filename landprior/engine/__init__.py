"""Inference under constraints: the shared heart of every task."""
