"""The runtime shipped next to each artifact: core.py (numpy-only pre/post-processing, the one source of truth
used by edgedet itself too) plus a small per-backend loader, rendered into a self-contained Python module."""
