"""The export stage: adapter, merged model, model card with provenance, and a reload check.

- :mod:`~cptnb.export.config`: :class:`ExportConfig` and the result types;
- :mod:`~cptnb.export.locate`: the trained model, its base, recipe and data report for a run folder;
- :mod:`~cptnb.export.merge`: merging in full precision, saving, and the reload check;
- :mod:`~cptnb.export.card`: the Hugging Face model card;
- :mod:`~cptnb.export.run`: :func:`export`, which writes the folder.
"""

from cptnb.export.config import ExportConfig, ExportResult
from cptnb.export.run import export, export_adapter, export_run

__all__ = ["ExportConfig", "ExportResult", "export", "export_adapter", "export_run"]
