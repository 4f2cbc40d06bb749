"""Profiles without the sandbox: the model, the rendered job, the snapshot's files, the tar
round trip, and the remote command line that no user value can break out of."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bridge.errors import ConfigError, PermanentError
from bridge.profiles.model import Profile, load_profiles, parse_profiles
from bridge.profiles.remote import Remote
from bridge.profiles.render import render_job, split_job
from bridge.profiles.snapshot import extract_tar, matches, select, write_tar
from bridge.profiles.state import Run, RunStore

IMAGE = "registry.lab:5000/skbridge-job:bookworm"


def _git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "-C", str(folder), *args], check=True,
                   capture_output=True)


def test_defaults_apply_and_profiles_override(tmp_path: Path) -> None:
    text = (f"defaults:\n  image: {IMAGE}\n  mem: 2G\n  time: 30\n"
            "profiles:\n  a:\n    command: echo a\n    gpus: 2\n  b:\n    command: echo b\n    mem: 8G\n")
    loaded = parse_profiles(text, tmp_path / "skbridge-profiles.yaml", Path("/elsewhere"))
    assert loaded.project == tmp_path.resolve()  # a project file: its folder is the project
    assert (loaded.get("a").mem, loaded.get("b").mem, loaded.get("b").image) == ("2G", "8G", IMAGE)
    assert (loaded.get("a").gpus, loaded.get("a").time) == ("2", "30")  # YAML numbers kept as Slurm's text
    with pytest.raises(ConfigError, match=r"no profile 'c'.*profiles: a, b"):
        loaded.get("c")


@pytest.mark.parametrize(("body", "complaint"), [
    ("command: x\n    gpu: 2", "profiles.p.gpu: Extra inputs"),
    ("command: x\n    gpus: lots", "TYPE:COUNT"),
    ("command: x\n    results: ../up", "inside the project"),
    ("command: x\n    code: [/etc]", "inside the project"),
    ("command: x\n    env: {1BAD: x}", "not a variable name"),
    ("command: x\n    env: {A: \"two\\nlines\"}", "one line"),
    ("command: x\n    image: \"a b\"", "one word"),
])
def test_a_bad_profile_names_its_key(tmp_path: Path, body: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_profiles(f"profiles:\n  p:\n    {body}\n", tmp_path / "skbridge.yaml", tmp_path)


def test_profile_names_and_file_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="profile name"):
        parse_profiles("profiles:\n  '../x':\n    command: x\n", tmp_path / "skbridge.yaml", tmp_path)
    (tmp_path / "proj" / "sub").mkdir(parents=True)
    (tmp_path / "proj" / "skbridge-profiles.yaml").write_text("profiles:\n  p:\n    command: x\n")
    assert load_profiles(None, tmp_path / "proj" / "sub").project == (tmp_path / "proj").resolve()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    (tmp_path / "cfg" / "skbridge").mkdir(parents=True)
    (tmp_path / "cfg" / "skbridge" / "profiles.yaml").write_text("profiles:\n  u:\n    command: x\n")
    other = tmp_path / "other"
    other.mkdir()
    user_level = load_profiles(None, other)
    assert list(user_level.profiles) == ["u"] and user_level.project == other.resolve()


def test_render_from_scratch() -> None:
    profile = Profile(command="python train.py --lr 0.1\necho done", image=IMAGE, gpus="a100:2", cpus=4, mem="8G",
                      time="2:00:00", env={"WANDB_MODE": "offline"}, mounts=["datasets:/data:ro"], results="out")
    text = render_job("train", profile, run_id="20260101-000000-abcd", project=Path("/nowhere"))
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "#SBATCH --job-name=train" in lines and "#SBATCH --gres=gpu:a100:2" in lines
    assert "#SBATCH --cpus-per-task=4" in lines and "#SBATCH --mem=8G" in lines and "#SBATCH --time=2:00:00" in lines
    assert f"#K8S_IMAGE={IMAGE}" in lines and "#K8S_ENV=WANDB_MODE=offline" in lines
    assert "#K8S_MOUNT=datasets:/data:ro" in lines
    assert "#K8S_RESULTS=/workspace/skbridge-runs/train/20260101-000000-abcd/out" in lines
    assert lines[-2:] == ["python train.py --lr 0.1", "echo done"]
    assert not any(line.startswith("#SBATCH --chdir") for line in lines)  # the snapshot decides
    with pytest.raises(ConfigError, match="give it a 'command'"):
        render_job("x", Profile(), run_id="r", project=Path("/nowhere"))


def test_render_overrides_a_base_file(tmp_path: Path) -> None:
    (tmp_path / "job.sh").write_text(
        "#!/bin/sh\n# my job\n#SBATCH -c 2\n#SBATCH --mem=1G\n#SBATCH --chdir=/somewhere\n#SBATCH --exclusive\n"
        "#K8S_IMAGE=old/image:1\n#K8S_ENV=A=1\n#K8S_ENV=B=2\n#K8S_WORKDIR=/workspace/x\n\nsetup\npython run.py\n")
    text = render_job("p", Profile(base="job.sh", mem="4G", image=IMAGE, env={"A": "9"}), run_id="r", project=tmp_path)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert "#SBATCH --cpus-per-task=2" in lines and "#SBATCH --exclusive" in lines
    assert "#SBATCH --mem=4G" in lines and "#SBATCH --mem=1G" not in lines
    assert f"#K8S_IMAGE={IMAGE}" in lines and "#K8S_IMAGE=old/image:1" not in lines
    assert "#K8S_ENV=B=2" in lines and "#K8S_ENV=A=9" in lines and "#K8S_ENV=A=1" not in lines
    assert not any("chdir" in line or "WORKDIR" in line for line in lines)
    assert lines[-2:] == ["setup", "python run.py"]  # the base body, kept without a command
    replaced = render_job("p", Profile(base="job.sh", command="echo only"), run_id="r", project=tmp_path)
    assert replaced.splitlines()[-1] == "echo only" and "python run.py" not in replaced
    assert split_job("echo no header\n").body == ["echo no header"]


def test_snapshot_of_a_git_project_takes_committed_files(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q", ".")
    (tmp_path / ".gitignore").write_text("data/\n*.log\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.py").write_text("m\n")
    (tmp_path / "train.py").write_text("t\n")
    os.symlink("train.py", tmp_path / "link.py")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "x")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"x" * 100)
    (tmp_path / "run.log").write_text("ignored\n")
    (tmp_path / "notes.txt").write_text("untracked\n")

    snap = select(tmp_path, [], allow_dirty=False, cap_bytes=1 << 20)
    assert snap.source == "git" and snap.commit is not None and len(snap.commit) == 40
    assert snap.files == [".gitignore", "link.py", "src/model.py", "train.py"]  # untracked and ignored left out
    assert select(tmp_path, ["src/"], allow_dirty=False, cap_bytes=1 << 20).files == ["src/model.py"]
    assert select(tmp_path, ["*.py"], allow_dirty=False, cap_bytes=1 << 20).files == ["link.py", "src/model.py", "train.py"]
    with pytest.raises(ConfigError, match="matches no file"):
        select(tmp_path, ["nothing/"], allow_dirty=False, cap_bytes=1 << 20)

    (tmp_path / "train.py").write_text("changed\n")
    with pytest.raises(ConfigError, match=r"uncommitted changes \(train.py\).*--dirty"):
        select(tmp_path, [], allow_dirty=False, cap_bytes=1 << 20)
    dirty = select(tmp_path, [], allow_dirty=True, cap_bytes=1 << 20)
    assert dirty.source == "git-dirty" and "notes.txt" in dirty.files and "run.log" not in dirty.files
    with pytest.raises(ConfigError, match="exceed"):
        select(tmp_path, [], allow_dirty=True, cap_bytes=4)


def test_snapshot_of_a_plain_folder(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("a\n")
    (tmp_path / ".git").mkdir()  # not a repository git knows; still never copied
    (tmp_path / ".git" / "junk").write_text("j\n")
    (tmp_path / "skbridge-results" / "p").mkdir(parents=True)
    (tmp_path / "skbridge-results" / "p" / "old.txt").write_text("o\n")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "b.txt").write_text("b\n")
    snap = select(tmp_path, [], allow_dirty=False, cap_bytes=1 << 20, excluded=["skbridge-results"])
    assert snap.source == "folder" and snap.files == ["a.py", "deep/er/b.txt"]
    assert matches("deep/er/b.txt", ["deep"]) and not matches("deeper.txt", ["deep"])


def test_tar_round_trip_and_refused_members(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "src").mkdir(parents=True)
    (project / "src" / "x.py").write_text("x\n")
    (project / "run.sh").write_text("#!/bin/sh\n")
    (project / "run.sh").chmod(0o755)
    os.symlink("src/x.py", project / "alias.py")
    snap = select(project, [], allow_dirty=False, cap_bytes=1 << 20)
    buffer = io.BytesIO()
    write_tar(snap, buffer, {".record.json": b"{}"})
    buffer.seek(0)
    names = extract_tar(buffer, tmp_path / "out")
    assert sorted(names) == [".record.json", "alias.py", "run.sh", "src/x.py"]
    assert (tmp_path / "out" / "src" / "x.py").read_text() == "x\n"
    assert os.readlink(tmp_path / "out" / "alias.py") == "src/x.py"
    assert os.access(tmp_path / "out" / "run.sh", os.X_OK)
    with pytest.raises(FileExistsError):
        extract_tar(io.BytesIO(buffer.getvalue()), tmp_path / "out")  # a run folder is always new

    for evil in ("../escape.txt", "/abs.txt", "a/../../escape.txt"):
        bad = io.BytesIO()
        with tarfile.open(fileobj=bad, mode="w") as archive:
            info = tarfile.TarInfo(evil)
            info.size = 1
            archive.addfile(info, io.BytesIO(b"x"))
        bad.seek(0)
        with pytest.raises(PermanentError, match="outside"):
            extract_tar(bad, tmp_path / f"evil-{len(evil)}")
    assert not (tmp_path / "escape.txt").exists()


def test_a_link_in_the_stream_is_never_written_through(tmp_path: Path) -> None:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as archive:
        link = tarfile.TarInfo("sub")
        link.type = tarfile.SYMTYPE
        link.linkname = str(tmp_path / "victim")
        archive.addfile(link)
        info = tarfile.TarInfo("sub/owned.txt")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "victim").mkdir()
    stream.seek(0)
    with pytest.raises(FileExistsError):  # the folder made for the file blocks the link made last
        extract_tar(stream, tmp_path / "run")
    assert list((tmp_path / "victim").iterdir()) == []


@pytest.mark.parametrize("value", ["a b", "$(touch pwned)", "`touch pwned`", "x; touch pwned", "it's", '"q"', "*",
                                   "a\nb", "--flag", "~", "&& touch pwned", "|touch pwned"])
def test_remote_command_keeps_every_value_one_word(tmp_path: Path, value: str) -> None:
    remote = Remote("login.lab", ssh=f"{sys.executable} -m bridge.profiles.localssh", skbridge="printf '%s\\0'")
    argv = remote.argv(["submit", "--chdir", value, "-"])
    assert argv[-3:-1] == ["--", "login.lab"]
    assert shlex.split(argv[-1]) == ["printf", "%s\\0", "submit", "--chdir", value, "-"]
    # Through a real shell, as ssh's far side runs it: the value comes back intact and nothing ran.
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, check=True)
    assert done.stdout.split(b"\0")[:-1] == [b"submit", b"--chdir", value.encode(), b"-"]
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("host", ["-oProxyCommand=touch x", "a b", "host;id", "", "h\n"])
def test_remote_refuses_what_is_not_a_host(host: str) -> None:
    with pytest.raises(ConfigError, match="not a host name"):
        Remote(host)


def test_run_store_keeps_start_order(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "state")
    first = Run(profile="p", run_id="2", project="/x", run_dir="/r/2", created="t")
    second = Run(profile="p", run_id="1", project="/x", run_dir="/r/1", created="t")
    other = Run(profile="p", run_id="3", project="/y", run_dir="/r/3", created="t")
    for run in (first, second, other):
        store.put(run)
    first.job_id = "10"
    store.put(first)  # an update keeps its place
    assert [r.run_id for r in store.runs("p", Path("/x"))] == ["2", "1"]
    assert store.runs("p", Path("/x"))[0].job_id == "10"
    store.drop("p", "2")
    assert [r.run_id for r in store.runs()] == ["1", "3"]


def test_the_readme_example_is_a_valid_profile_file(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Profiles"):]
    example = section[section.index("```yaml\n") + len("```yaml\n"):section.index("```\n", section.index("```yaml"))]
    loaded = parse_profiles(example, tmp_path / "skbridge-profiles.yaml", tmp_path)
    train = loaded.get("train")
    assert (train.gpus, train.mem, train.code, train.results) == ("a100:2", "16G", ["src/", "train.py"], "outputs")
    assert loaded.get("eval").base == "jobs/eval.sh" and loaded.get("eval").gpus == "1"
    text = render_job("train", train, run_id="r", project=tmp_path)
    assert "#K8S_MOUNT=datasets:/data:ro" in text and "#SBATCH --gres=gpu:a100:2" in text
