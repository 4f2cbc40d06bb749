"""Job history (SQLite WAL on local disk): what `skbridge serve` lists jobs from.

A base module: the ingest pipeline, the hooks and the service write to it; it imports no stage.
"""
