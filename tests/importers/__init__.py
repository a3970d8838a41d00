"""Importers of foreign checkpoints."""
