"""What a user may know about their own jobs: Slurm's view, the results folder, the job's Pod.

Read-only and free of any CLI or web framework, so `skbridge` and the later web service
share it. Every Slurm query is one bounded call (`bridge.slurm.commands.run_slurm`, no
shell); nothing here issues one call per job.
"""
