"""Slurm: running its commands, submitting jobs, and the hooks slurmctld calls."""
