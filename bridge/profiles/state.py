"""What the user's runs were: one JSON file per user, `runs.json` in the state folder
($SKBRIDGE_STATE_DIR, else $XDG_STATE_HOME/skbridge, else ~/.local/state/skbridge of the account).
Each run also leaves `.skbridge-run.json` in its snapshot folder, so `recover` can find runs the
state file lost (another laptop, a deleted state folder)."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from bridge.errors import PermanentError

RUN_RECORD = ".skbridge-run.json"


class Run(BaseModel):
    model_config = ConfigDict(extra="ignore")

    profile: str
    run_id: str
    project: str
    run_dir: str  # absolute, on the machine that runs the job (the NAS as the login node sees it)
    host: str | None = None  # submitted over SSH from this machine
    job_id: str | None = None
    created: str
    source: str = "folder"
    commit: str | None = None
    files: int = 0
    state: str | None = None  # last state seen
    collected_to: str | None = None
    collected_at: str | None = None
    snapshot_removed: bool = False
    previous_jobs: list[str] = []  # earlier attempts (`recover --resubmit`)


def state_dir() -> Path:
    if os.environ.get("SKBRIDGE_STATE_DIR"):
        return Path(os.environ["SKBRIDGE_STATE_DIR"])
    if os.environ.get("XDG_STATE_HOME"):
        return Path(os.environ["XDG_STATE_HOME"]) / "skbridge"
    # The account's own home, not $HOME: `runuser -u`/`sudo -u` keep the caller's.
    return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".local" / "state" / "skbridge"


class RunStore:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or state_dir()
        self.path = self.folder / "runs.json"

    def _read(self) -> list[Run]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise PermanentError(f"the run record {self.path} cannot be read: {exc}") from exc
        runs = []
        for item in raw.get("runs", []) if isinstance(raw, dict) else []:
            try:
                runs.append(Run.model_validate(item))
            except ValidationError:
                continue  # a record from a newer or broken writer: leave it out, keep the rest
        return runs

    def runs(self, profile: str | None = None, project: Path | None = None) -> list[Run]:
        """The runs (of a profile, of a project: profile names repeat across projects), oldest first."""
        return [run for run in self._read() if (profile is None or run.profile == profile)
                and (project is None or Path(run.project) == project)]

    @contextmanager
    def editing(self) -> Iterator[list[Run]]:
        """The runs, locked against other skbridge processes of this user; written back on exit."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.folder / ".runs.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            runs = self._read()
            yield runs
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"runs": [run.model_dump() for run in runs]}, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)

    def put(self, run: Run) -> None:
        with self.editing() as runs:
            for index, item in enumerate(runs):  # in place: the list stays in the order runs were started
                if item.run_id == run.run_id and item.profile == run.profile:
                    runs[index] = run
                    return
            runs.append(run)

    def drop(self, profile: str, run_id: str) -> None:
        with self.editing() as runs:
            runs[:] = [item for item in runs if not (item.run_id == run_id and item.profile == profile)]
