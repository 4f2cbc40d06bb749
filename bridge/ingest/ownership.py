"""Whose drop is it: a job runs as its file's owner, so the file must come from that owner's folder.

See docs/drop-folder.md, "Whose job is it?". The folder's owner and mode are the ones read
from the very directory the file was renamed out of (journaled with the claim).
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from bridge.ingest.journal import Entry
from bridge.ingest.outcome import problem
from bridge.jobfile.spec import Problem


def folder_problem(entry: Entry, file_uid: int | None, *, submit_dir: Path) -> Problem | None:
    """Why the claimed file is not its owner's own drop, or None when it is.

    Anyone who can rename a colleague's file (a shared group directory on the same NAS)
    could otherwise `mv` it into the drop area and have it run as the colleague. Only the
    owner can write into submit/<owner>/ (mode 0700, the top level is root's), so a file
    there owned by the folder's owner was put there by that owner.
    """
    folder = None if entry.folder is None else os.fsdecode(entry.folder)
    where = submit_dir
    if folder is None:
        return problem("not-in-user-folder", f"the file was found directly in {where}/; files are only taken "
                       f"from each user's own folder {where}/<user>/",
                       f"the file in your own folder {where}/<your user name>/",
                       f"copy it there: cp FILE {where}/$USER/")
    try:
        account = pwd.getpwnam(folder)
    except KeyError:
        account = None
    if account is None or account.pw_uid != entry.folder_uid:
        return problem("not-a-user-folder", f"{where}/{folder}/ is not a user's drop folder (its owner, uid "
                       f"{entry.folder_uid}, is not the account {folder!r})", f"the file in {where}/<your user name>/",
                       f"copy it into your own folder: cp FILE {where}/$USER/")
    if file_uid is not None and file_uid != entry.folder_uid:
        return problem("not-your-folder", f"the file belongs to {_name_of(file_uid)} but was found in "
                       f"{folder}'s folder {where}/{folder}/; a job runs as the file's owner, so a file is only "
                       "taken from its owner's own folder", f"a file owned by {folder}",
                       f"the file's owner copies it (cp, not mv) into their own folder {where}/<their name>/")
    if entry.folder_mode is not None and entry.folder_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return problem("folder-writable-by-others", f"{where}/{folder}/ is writable by others (mode "
                       f"{stat.filemode(stat.S_IFDIR | entry.folder_mode)}), so someone else may have put the "
                       "file there", "a drop folder only you can write to",
                       f"run `chmod 700 {where}/{folder}` and copy the file again")
    return None


def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
