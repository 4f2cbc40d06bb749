"""Slurm's pending reasons in plain words."""

from __future__ import annotations

_PLAIN = {
    "Priority": "other jobs have higher priority and are ahead in the queue",
    "Resources": "waiting for CPUs, memory or GPUs to become free; it is next in line",
    "Dependency": "waiting for the jobs it depends on to finish",
    "DependencyNeverSatisfied": "a job it depends on failed: it will never start (cancel it)",
    "JobHeldUser": "held by you (scontrol release JOBID to let it run)",
    "JobHeldAdmin": "held by an administrator",
    "BeginTime": "its start time (--begin) has not come yet",
    "PartitionDown": "its partition is down; it starts when an administrator brings it back",
    "PartitionInactive": "its partition is inactive",
    "PartitionTimeLimit": "its --time is longer than the partition allows: it will not start (resubmit shorter)",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "ReqNodeNotAvail": "a node it needs is unavailable (down, drained or reserved)",
    "NodeDown": "a node it needs is down",
    "BadConstraints": "no node has the features or resources it asks for",
    "Reservation": "waiting for its reservation to start",
    "Licenses": "waiting for licenses",
    "launch failed requeued held": "the job failed to start and was held; ask an administrator",
    "JobArrayTaskLimit": "the array's limit of tasks running at once is reached",
    "InvalidQOS": "its QOS is not valid for your account",
    "InvalidAccount": "its account is not valid",
    "Cleaning": "the node is still cleaning up after a previous run",
    "Prolog": "the bridge is starting its Pod",
    "None": "not yet considered by the scheduler",
    "ReqNodeNotAvail, Reserved for maintenance": "the nodes are reserved for maintenance",
}


def plain_reason(reason: str | None) -> str | None:
    """Slurm's reason code followed by what it means, or None when there is no reason."""
    if not reason:
        return None
    code = reason.split("(", 1)[0].strip()
    words = _PLAIN.get(reason) or _PLAIN.get(code)
    if words is None and code.startswith(("QOS", "Assoc")):
        words = "a usage limit of your account or QOS is reached; it starts when your other jobs free it"
    if words is None and "Requeue" in code:
        words = "it was requeued and waits to start again"
    return f"{reason}: {words}" if words else reason
