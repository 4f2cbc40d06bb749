"""Collect: what a job leaves on the NAS (results folder, status, manifest, checksums)."""
