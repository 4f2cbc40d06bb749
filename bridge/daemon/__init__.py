"""The watcher process's composition root: it assembles the stages (drop-folder ingest, the
hook server, the reaper and retention) that know nothing of each other."""
