"""Ingest: job files from the NAS drop folder to Slurm jobs, exactly once."""
