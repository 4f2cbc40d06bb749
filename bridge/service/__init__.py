"""`skbridge serve`: the lab's REST API over what `skbridge` shows on the command line.

Every answer is for one authenticated Unix user (MUNGE credential or a short-lived token
issued for one); the read logic is `bridge.userview`'s, the submit path the watcher's.
"""
