"""Export a finished run for serving: merged weights, the adapter, GGUF (+ Ollama), vLLM.

Entry point: :func:`ayar.export.run.export_run`. Every export is written to a
hidden staging folder, checked (``verify``), described by an export manifest
(sha256 of every file) and only then renamed into place, so a folder that
looks complete is complete. The run folder's ``exports.jsonl`` lists them all.
"""
