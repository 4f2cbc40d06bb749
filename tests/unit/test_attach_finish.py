"""How attach completes the job's output once its Pod has ended (bridge.hooks.attach._finish_log)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from bridge.hooks.attach import _finish_log, _follow_log, _LogCopy
from bridge.kubernetes.lite import PodAccess

pytestmark = pytest.mark.unit

LOG = b"line 1\nline 2\nline 3\n"


class _Pod:
    """A Pod that has ended, served by a node that keeps a followed log open (kwok does)."""

    def __init__(self, *, stream_closes: bool) -> None:
        self.stream_closes = stream_closes
        self.reads = 0
        self.released = threading.Event()

    def follow_log(self) -> Iterator[bytes]:
        yield LOG
        if not self.stream_closes:
            self.released.wait(30)

    def read_log(self) -> bytes:
        self.reads += 1
        return LOG

    def get(self) -> dict[str, Any]:
        return {"status": {"phase": "Succeeded",
                           "containerStatuses": [{"name": "job", "state": {"terminated": {"exitCode": 0}}}]}}


@pytest.mark.parametrize("stream_closes", [True, False])
def test_the_output_is_whole_once_and_an_open_stream_is_not_waited_out(stream_closes: bool) -> None:
    pod = _Pod(stream_closes=stream_closes)
    out = io.BytesIO()
    copy = _LogCopy(out)
    follower = threading.Thread(target=_follow_log, args=(cast(PodAccess, pod), copy), daemon=True)
    follower.start()
    while copy.written < len(LOG):
        time.sleep(0.01)
    started = time.monotonic()
    _finish_log(cast(PodAccess, pod), copy, follower)
    assert time.monotonic() - started < 2.0, "the 5 s for a stream that never closes is not waited out"
    assert out.getvalue() == LOG
    assert pod.reads == (0 if stream_closes else 1)
    pod.released.set()
