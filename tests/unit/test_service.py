"""The service's pure parts: progress parsing (training output -> percent and ETA), tokens, unmunge output, result paths."""

from __future__ import annotations

import pytest

from bridge.service.progress import parse_progress


@pytest.mark.parametrize(("text", "percent", "source"), [
    ("epoch 3/10\n", 30.0, "epoch 3/10"),
    ("Epoch [7/20] loss=0.31\n", 35.0, "epoch 7/20"),
    ("step 1200/5000 loss 2.1\n", 24.0, "step 1200/5000"),
    ("Epoch 2/4 step 50/100\n", 50.0, "epoch 2/4"),
    ("iter: 10/40\n", 25.0, "iter 10/40"),
    ("train:  45%|████▌     | 45/100 [00:09<00:11,  4.9it/s]", 45.0, "tqdm 45%"),
    ("  3%|▎ | 3/100\r 17%|█▋ | 17/100\r", 17.0, "tqdm 17%"),
    ("done 80%\n", 80.0, "80%"),
    ("progress: 12.5 %\n", 12.5, "12.5%"),
    ("epoch 1/10\nepoch 2/10\nsaving checkpoint\n", 20.0, "epoch 2/10"),
    ("epoch 9/10\n  60%|######    |\n", 60.0, "tqdm 60%"),
])
def test_progress_table(text: str, percent: float, source: str) -> None:
    progress = parse_progress(text)
    assert progress is not None
    assert (progress.percent, progress.source) == (percent, source)


@pytest.mark.parametrize("text", ["", "hello world\n", "epoch 11/10\n", "step 5/0\n", "used 250% CPU\n"])
def test_no_progress(text: str) -> None:
    assert parse_progress(text) is None


def test_eta_from_elapsed() -> None:
    progress = parse_progress("epoch 1/4\n", elapsed_s=60)
    assert progress is not None and progress.eta_s == 180
    assert parse_progress("epoch 0/4\n", elapsed_s=60).eta_s is None  # type: ignore[union-attr]
    assert parse_progress("epoch 4/4\n", elapsed_s=60).eta_s == 0  # type: ignore[union-attr]


def test_tokens_expire_and_resist_tampering() -> None:
    from bridge.service.identity import AuthError, TokenSigner

    signer = TokenSigner(ttl_s=60, key=b"k" * 32)
    token, expires = signer.issue(1501, 1501, now=1000.0)
    assert expires == 1060.0 and signer.check(token, now=1059.0) == (1501, 1501)
    with pytest.raises(AuthError, match="expired"):
        signer.check(token, now=1060.0)
    body, _, sig = token.partition(".")
    with pytest.raises(AuthError):
        TokenSigner(ttl_s=60).check(token, now=1000.0)  # another process's key
    with pytest.raises(AuthError):
        signer.check(body[:-2] + "AA." + sig, now=1000.0)


UNMUNGE_OK = """STATUS:          Success (0)
ENCODE_HOST:     localhost (127.0.0.1)
TTL:             300
UID:             skbalice (1501)
GID:             lab (1600)
LENGTH:          0
"""


def test_unmunge_output_is_read_for_the_numeric_ids() -> None:
    from bridge.service.identity import _NUMBER, parse_unmunge

    fields = parse_unmunge(UNMUNGE_OK)
    assert fields["STATUS"] == "Success (0)"
    uid, gid = _NUMBER.search(fields["UID"]), _NUMBER.search(fields["GID"])
    assert uid is not None and gid is not None
    assert (int(uid.group(1)), int(gid.group(1))) == (1501, 1600)


@pytest.mark.parametrize("relative", ["../x", "a/../../x", "/etc/passwd", ".credential", "a/.hidden", "", "."])
def test_result_paths_that_leave_the_folder_or_hide_are_refused(tmp_path: object, relative: str) -> None:
    from pathlib import Path

    from fastapi import HTTPException

    from bridge.service.results import safe_relative

    with pytest.raises(HTTPException) as refused:
        safe_relative(Path(str(tmp_path)), relative)
    assert refused.value.status_code == 404
