"""Importers of foreign detector checkpoints into edgedet supernets (`edgedet import ...`)."""
from __future__ import annotations

from .rfdetr import ImportReport, convert_rfdetr, import_rfdetr, read_rfdetr_checkpoint

__all__ = ["ImportReport", "convert_rfdetr", "import_rfdetr", "read_rfdetr_checkpoint"]
