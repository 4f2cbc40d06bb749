"""The Slurm hooks: PrologSlurmctld and EpilogSlurmctld, and the batch-step launcher."""
