"""Issue 11 item 3: the validator reads #SBATCH lines exactly as Slurm 22.05's sbatch does.

Readings below follow src/sbatch/opt.c (`_opt_batch_script`, `get_argument`) and glibc's
`getopt_long` with sbatch's option table; tests/security/test_sbatch_differential.py checks
the same cases against the real sbatch and slurmctld.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.jobfile import sbatch_values as values
from bridge.jobfile.launcher import insert_launcher, launcher_line
from bridge.jobfile.sbatch_grammar import LONG_OPTIONS, NO, OPTIONAL, SHORT_OPTIONS, read_header
from bridge.jobfile.sbatch_policy import ALLOWED_SBATCH
from bridge.jobfile.spec import parse_job_text
from bridge.settings import NasSettings, PolicySettings

POLICY = PolicySettings(allowed_registries=["registry.lab:5000"], max_cpus_per_task=32, max_mem_mib=65536,
                        max_gpus=4, max_time_minutes=2 * 24 * 60, max_array_tasks=10)
NAS = NasSettings(root=Path("/mnt/nas"))


def reading(*lines: str) -> list[tuple[str, str | None]]:
    header = read_header(["#!/bin/bash", *lines, "echo hi"])
    assert header.problems == [], header.problems
    return [(o.name, o.value) for o in header.options]


def refusal(*lines: str) -> list[str]:
    """The error codes the validator gives a job with these header lines (empty: accepted)."""
    text = "\n".join(["#!/bin/bash", *lines, "#K8S_IMAGE=registry.lab:5000/x:1", "echo hi", ""])
    spec, problems = parse_job_text(text, POLICY, NAS, owner="alice", owner_home=Path("/home/alice"))
    errors = [p.code for p in problems if p.severity == "error"]
    assert (spec is None) == bool(errors)
    return errors


@pytest.mark.parametrize(("lines", "expected"), [
    (("#SBATCH--hold",), [("hold", None)]),                                   # no space after the magic word
    (("#SLURM --hold",), [("hold", None)]),                                   # the old magic word
    (("#SBATCH\t--hold\v-t\f5\r",), [("hold", None), ("time", "5")]),         # every C isspace separates
    (("#SBATCH --job-name", "#SBATCH --hold"), [("job-name", "--hold")]),    # a value from the next line
    (("#SBATCH -HJ x",), [("hold", None), ("job-name", "x")]),                # combined short flags
    (("#SBATCH -c=4",), [("cpus-per-task", "=4")]),                          # short: the rest is the value
    (("#SBATCH --cpus-per-t=4",), [("cpus-per-task", "4")]),                 # unique prefix
    (("#SBATCH --tasks-per-node=2",), [("ntasks-per-node", "2")]),           # alias
    (("#SBATCH --job-name=a#b --hold",), [("job-name", "a")]),               # '#' ends the line inside a word
    (("#SBATCH --job-name='a#b' --hold",), [("job-name", "a#b"), ("hold", None)]),
    (("#SBATCH --job-name=\"a b\"",), [("job-name", "a b")]),
    (("#SBATCH --job-name=a\\ b",), None),                                   # an escaped space still splits...
    (("#SBATCH --job-name=a\\#b",), [("job-name", "a#b")]),                  # ...an escaped '#' does not
    (("#SBATCH --jo\"b-na\"me=x",), [("job-name", "x")]),                    # quotes anywhere in a word vanish
    (("#SBATCH --job-name='it\\'s'",), [("job-name", "it's")]),              # backslash works inside quotes too
    (("#SBATCH --hold \"\" --job-name=x",), [("hold", None)]),               # an empty word ends the line
    (("#SBATCH --hold hetjob --job-name=x",), None),                          # so does a het separator word
    ((" #SBATCH --hold",), []),                                                # not at column 0: a comment
    (("#sbatch --hold",), []),
    (("", "\v", "# c", "#SBATCH --hold"), [("hold", None)]),                   # blank and comment lines skipped
])
def test_readings(lines: tuple[str, ...], expected: list[tuple[str, str | None]] | None) -> None:
    if expected is None:
        assert read_header(["#!/bin/bash", *lines]).problems
    else:
        assert reading(*lines) == expected


def test_the_header_ends_at_the_first_command_by_c_isspace() -> None:
    assert read_header(["#!/bin/bash", "\v\f\r", "x", "#SBATCH --hold"]).options == []
    assert read_header(["#!/bin/bash", "\xa0", "#SBATCH --hold"]).end == 1  # not a C space: a command


@pytest.mark.parametrize("line", [
    "#SBATCH --wait", "#SBATCH--wait", "#SLURM --wait", "#SBATCH\v--wait", "#SBATCH\f-W", "#SBATCH -W",
    "#SBATCH -HW", "#SBATCH -H -W", "#SBATCH --wa\"it\"", "#SBATCH '--wait'", "#SBATCH --wai",
    "#SBATCH --export=ALL", "#SBATCH --exp=ALL", "#SBATCH --expo ALL", "#SBATCH --export=NONE,HOME",
    "#SBATCH --export=\"ALL\"", "#SBATCH --uid=0", "#SBATCH --ui 0", "#SBATCH --gid=0", "#SBATCH --g=0",
    "#SBATCH --comment=x", "#SBATCH --comm=x", "#SBATCH -i /etc/shadow", "#SBATCH --get-user-env",
    "#SBATCH --exclusive", "#SBATCH --excl", "#SBATCH --container=x", "#SBATCH --export-f=x",
    "#SBATCH --mem=1G\t--wait", "#SBATCH --mem=1G\r--wait", "#SBATCH hetjob", "#SBATCH --mem=1G hetjob",
    "#SBATCH --WAIT", "#SBATCH -- --wait", "#SBATCH junk --wait", "#SBATCH :x",
])
def test_forbidden_options_never_slip_through_in_any_spelling(line: str) -> None:
    assert refusal(line), line


@pytest.mark.parametrize(("lines", "code"), [
    (("#SBATCH --mem=0",), "over-limit"),
    (("#SBATCH --mem-per-cpu=0",), "over-limit"),
    (("#SBATCH --mem=64G",), None),
    (("#SBATCH --mem=67108864K",), None),        # 64 GiB in KiB: exactly the limit
    (("#SBATCH --mem=67108865K",), "over-limit"),  # KiB round up: one MiB more
    (("#SBATCH --mem=1.5G",), "option-value"),
    (("#SBATCH --mem=1G --mem-per-cpu=1G",), "option-value"),  # sbatch: mutually exclusive
    (("#SBATCH -n 4 -c 8 --mem-per-cpu=3G",), "over-limit"),   # 32 CPUs x 3G = 96G
    (("#SBATCH -n 8 -c 8",), "over-limit"),                    # 64 CPUs in all
    (("#SBATCH --gpus=2 --mem-per-gpu=40G",), "over-limit"),
    (("#SBATCH --mem-per-gpu=1G",), "option-value"),
    (("#SBATCH --gpus=5",), "over-limit"),
    (("#SBATCH -G a100:5",), "over-limit"),
    (("#SBATCH --gpus-per-node=5",), "over-limit"),
    (("#SBATCH -n 3 --gpus-per-task=2",), "over-limit"),
    (("#SBATCH --gpus-per-task=2",), None),
    (("#SBATCH --gres=gpu:2 --gpus=2",), "option-value"),
    (("#SBATCH --gres=gpu:2k",), "option-value"),
    (("#SBATCH --time=0",), "over-limit"),                     # sbatch(1): zero means no limit
    (("#SBATCH --time=UNLIMITED",), "over-limit"),
    (("#SBATCH --time=infinite",), "over-limit"),
    (("#SBATCH --time=-1",), "over-limit"),
    (("#SBATCH --time=2-00:00:01",), "over-limit"),
    (("#SBATCH --time=2-00:00:00",), None),
    (("#SBATCH --time=2880:59",), "over-limit"),              # MM:SS, seconds round up
    (("#SBATCH --time=99999999999",), "over-limit"),
    (("#SBATCH --array=0-10",), "over-limit"),                 # 11 ids
    (("#SBATCH --array=0-9,0-9",), None),                      # 10 distinct ids
    (("#SBATCH --array=0-100:10",), "over-limit"),             # 11 ids
    (("#SBATCH --array=0-99:10%2",), None),
    (("#SBATCH -a 1-4000000000",), "over-limit"),
])
def test_site_maxima(lines: tuple[str, ...], code: str | None) -> None:
    assert refusal(*lines) == ([code] if code else [])


def test_values_as_slurm_computes_them() -> None:
    assert [values.mbytes(v) for v in ("1", "1K", "1025k", "2G", "1TB", "3mb", "0", "", "1P", " 1")] == \
        [1, 1, 2, 2048, 1024 * 1024, 3, 0, None, None, None]
    assert [values.time_minutes(v) for v in ("5", "5:01", "1:00:00", "1-0", "1-2:03", "1-0:0:1")] == \
        [5, 6, 60, 1440, 1563, 1441]
    assert values.array_tasks("1,3,5-9:2%1") == 5


def test_header_lines_bash_would_run_are_refused() -> None:
    # sbatch skips these as blank or comment lines; bash runs them as commands before the launcher.
    assert "header-whitespace" in refusal("\v#x")
    assert "header-whitespace" in refusal("\f")
    assert refusal("  \t# an indented comment") == []


# -- property: any spelling sbatch accepts is read back as the options it spells ----------------

SEPARATORS = st.text(alphabet=" \t\v\f\r", min_size=1, max_size=3)
VALUE = st.text(alphabet="abcXYZ019 #'\"\\=:,-_./@%", min_size=1, max_size=12)
OPTION = st.sampled_from(sorted(LONG_OPTIONS))


def _quoted(value: str, quote: str) -> str:
    """Quote so that get_argument gives back `value`: backslash escapes work inside either quote."""
    return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def _prefixes(name: str) -> list[str]:
    """Every abbreviation getopt_long resolves to `name` alone."""
    found = []
    for end in range(1, len(name) + 1):
        prefix = name[:end]
        matches = {n for n in LONG_OPTIONS if n.startswith(prefix)}
        if prefix == name or matches == {name}:
            found.append(prefix)
    return found


# Allowed options with values the site accepts: headers the validator takes, spelled any way.
VALID_VALUES: dict[str, st.SearchStrategy[str]] = {
    "job-name": VALUE, "time": st.sampled_from(["5", "1:30", "1-0", "0-1:00:01"]),
    "mem": st.sampled_from(["1", "1500K", "2G", "8gb"]), "cpus-per-task": st.sampled_from(["1", "4", "8"]),
    "hold": st.just(""), "requeue": st.just(""), "mail-type": st.sampled_from(["END", "FAIL"]),
    "array": st.sampled_from(["0-3", "1,3,5", "0-9:3%2"]), "gres": st.sampled_from(["gpu:1", "gpu:a100:2"]),
    "partition": st.sampled_from(["gpu", "debug"]), "ntasks": st.sampled_from(["1", "2"]),
}


@st.composite
def spelled_option(draw: st.DrawFn, names: st.SearchStrategy[str] = OPTION,
                   valid: bool = False) -> tuple[list[str], tuple[str, str | None]]:
    """One option spelled one of the ways sbatch accepts; the words, and what sbatch reads."""
    name = draw(names)
    has_arg = LONG_OPTIONS[name]
    canonical = "ntasks-per-node" if name == "tasks-per-node" else name
    values = VALID_VALUES[name] if valid else VALUE
    value = None if has_arg == NO or (has_arg == OPTIONAL and draw(st.booleans())) else draw(values)
    shorts = [s for s, (n, _) in SHORT_OPTIONS.items() if n == name]
    spelling = draw(st.sampled_from(_prefixes(name)))
    if draw(st.booleans()) and len(spelling) > 1:  # a quoted piece in the middle of the name
        cut = draw(st.integers(1, len(spelling) - 1))
        spelling = spelling[:cut] + _quoted(spelling[cut:], draw(st.sampled_from("\"'")))
    quote = draw(st.sampled_from("\"'"))
    use_short, attached = draw(st.booleans()), draw(st.booleans())
    if value is None:
        words = [f"-{shorts[0]}" if shorts and use_short else f"--{spelling}"]
    elif shorts and use_short:
        words = ([f"-{shorts[0]}{_quoted(value, quote)}"] if has_arg == OPTIONAL or attached
                 else [f"-{shorts[0]}", _quoted(value, quote)])
    elif has_arg == OPTIONAL or draw(st.booleans()):
        words = [f"--{spelling}={_quoted(value, quote)}"]
    else:
        words = [f"--{spelling}", _quoted(value, quote)]
    return words, (canonical, value)


@st.composite
def spelled_header(draw: st.DrawFn, valid: bool = False) -> tuple[list[str], list[tuple[str, str | None]]]:
    if valid:
        names = draw(st.lists(st.sampled_from(sorted(VALID_VALUES)), min_size=1, max_size=6, unique=True))
        options = [draw(spelled_option(st.just(name), valid=True)) for name in names]
    else:
        options = draw(st.lists(spelled_option(), min_size=1, max_size=6))
    words = [word for spelled, _ in options for word in spelled]
    lines: list[str] = []
    at = 0
    while at < len(words):
        take = draw(st.integers(1, len(words) - at))
        magic = draw(st.sampled_from(["#SBATCH", "#SLURM"]))
        gap = draw(st.one_of(st.just(""), SEPARATORS))
        body = "".join(word + draw(SEPARATORS) for word in words[at:at + take])
        tail = draw(st.sampled_from(["", "# a comment", " # x --wait", "\r"]))
        lines.append(magic + gap + body + tail)
        at += take
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", "# note", "\t", "   #SBATCH --wait", "#sbatch --wait"])))
    return lines, [reading for _, reading in options]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spelled_header())
def test_every_spelling_is_read_as_the_options_it_spells(case: tuple[list[str], list[tuple[str, str | None]]]) -> None:
    lines, expected = case
    assert reading(*lines) == expected


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spelled_header())
def test_a_forbidden_option_in_any_spelling_refuses_the_job(case: tuple[list[str], list[tuple[str, str | None]]]) -> None:
    lines, expected = case
    if any(name not in ALLOWED_SBATCH for name, _ in expected):
        assert refusal(*lines)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(alphabet="#SBATCHLURMK8_ -=\"'\\\t\v\f\r\n:waitexporl0123456789", max_size=40), max_size=8))
def test_read_header_is_total(lines: list[str]) -> None:
    header = read_header(["#!/bin/bash", *lines])
    assert 0 <= header.end <= len(lines) + 1


@pytest.mark.parametrize(("shebang", "accepted"), [
    ("#!/bin/bash", True), ("#!/bin/sh -e", True), ("#!/usr/bin/env bash", True),
    ("#!/bin/bash -l", False),                        # reads ~/.bash_profile on the host first
    ("#!/usr/bin/env -S sh -c 'touch /tmp/x'", False),  # runs a command, not the script
    ("#!/usr/bin/awk -f", False), ("#!/usr/bin/python3", False),
])
def test_only_shell_scripts_whose_launcher_line_runs_first(shebang: str, accepted: bool) -> None:
    text = f"{shebang}\n#K8S_IMAGE=registry.lab:5000/x:1\necho hi\n"
    spec, problems = parse_job_text(text, POLICY, NAS, owner="alice", owner_home=Path("/home/alice"))
    assert (spec is not None) == accepted, problems
    assert accepted or [p.code for p in problems] == ["interpreter"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spelled_header(valid=True), st.lists(st.sampled_from(["", "\t", "# c", " #SBATCH x", "\v", "\f# c", "#SBATCH --time=5"]),
                                  max_size=3),
       st.sampled_from(["echo hi", "\vecho hi", "  python x.py", ""]))
def test_the_launcher_never_changes_what_sbatch_reads_of_an_accepted_file(
        case: tuple[list[str], list[tuple[str, str | None]]], extra: list[str], command: str) -> None:
    lines, _expected = case
    text = "\n".join(["#!/bin/bash", *lines, *extra, "#K8S_IMAGE=registry.lab:5000/x:1", command, ""])
    spec, _problems = parse_job_text(text, POLICY, NAS, owner="alice", owner_home=Path("/home/alice"))
    if spec is None:
        return
    skb = Path("/opt/slurm-k8s-bridge/bin/skbridge")
    before, after = read_header(text.split("\n")), read_header(insert_launcher(text, skb).split("\n"))
    assert [(o.name, o.value) for o in after.options] == [(o.name, o.value) for o in before.options]
    inserted = insert_launcher(text, skb).split("\n")
    assert inserted[after.end] == launcher_line(skb)  # sbatch's header ends exactly at the launcher


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spelled_header(valid=True))
def test_an_allowed_header_is_accepted_in_every_spelling(case: tuple[list[str], list[tuple[str, str | None]]]) -> None:
    lines, expected = case
    text = "\n".join(["#!/bin/bash", *lines, "#K8S_IMAGE=registry.lab:5000/x:1", "echo hi", ""])
    spec, problems = parse_job_text(text, POLICY, NAS, owner="alice", owner_home=Path("/home/alice"))
    if any(line.endswith("\r") for line in lines):  # a DOS line break: refused, as sbatch refuses it
        assert spec is None and [p.code for p in problems if p.severity == "error"] == ["crlf"]
        return
    assert spec is not None, problems
    assert [(o.name, o.value) for o in spec.sbatch_options] == expected
