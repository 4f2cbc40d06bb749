"""The job file: what a user hands in, read the same way by every road it takes.

The drop folder's watcher, `skbridge validate`/`submit`, the service, the hooks and the
sandbox all read a job file through this package: `spec` (the parsed job and its checks),
`sbatch_grammar` (sbatch's own reading of `#SBATCH` lines), `sbatch_policy` and
`sbatch_values` (which options and values the site allows), `launcher` (the batch step's
line and job_submit.lua's rendering), `routing` (which jobs take the Kubernetes road) and
`problems` (the messages a person reads). It imports no stage of the job's path.
"""
