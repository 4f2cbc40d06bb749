"""Profiles: named runs of a project (seed 001). A profile file names each run's job, the code
to snapshot and what to collect; every run takes an isolated snapshot on the NAS."""
