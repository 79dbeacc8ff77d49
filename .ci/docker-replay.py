#!/usr/bin/env python3
"""Replay the Dockerfile's build stages without a Docker daemon (issue 29).

No container runtime exists on the CI machine, so nothing else would notice a Dockerfile that
no longer builds (it did not, for weeks: a workspace member missing from its COPYs). This
script does what `docker build` does for the stages the final image copies from:

- the build context is the files git tracks (what a clean checkout has), less .dockerignore;
- each stage gets an empty directory standing for its WORKDIR; `COPY src dst` copies exactly
  the named context paths there, `COPY --from=stage` copies out of that stage's directory;
- each `RUN` runs there with `sh -c`, with the stage's `ENV` on top of this environment (the
  cargo registry cache as it is; CARGO_TARGET_DIR, when set, stands for the WORKDIR's
  `target`, so dependencies built once are reused);
- the final stage's `RUN`s (apt-get, useradd) are not run, but every file its `COPY`s name
  must exist.

A missing file or a failing command fails the replay, with the command's own error. The base
image's toolchain is the machine's: a different `rustc` than the `FROM rust:X.Y` tag is said.

    python3 .ci/docker-replay.py [Dockerfile]
"""
import fnmatch
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def instructions(text):
    """(keyword, argument) pairs, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued RUN, as Docker allows
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arg = line.partition(" ")
        out.append((keyword.upper(), arg.strip()))
    return out


class Stage:
    def __init__(self, index, image, name):
        self.index, self.image, self.name = index, image, name
        self.steps = []
        self.workdir = "/"
        self.env = {}
        self.dir = None  # the replay directory standing for WORKDIR

    def label(self):
        return self.name or f"#{self.index}"


def stages_of(text):
    stages = []
    for keyword, arg in instructions(text):
        if keyword == "FROM":
            parts = arg.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(len(stages), parts[0], name))
        elif stages:
            stages[-1].steps.append((keyword, arg))
    return stages


def copy_args(arg):
    """(options, sources, destination) of a COPY; the JSON form is accepted too."""
    if arg.startswith("["):
        import json

        words = json.loads(arg)
    else:
        words = shlex.split(arg)
    opts = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        opts[key] = value
    return opts, words[:-1], words[-1]


def ignore_patterns():
    path = ROOT / ".dockerignore"
    if not path.exists():
        return []
    return [
        l.strip()
        for l in path.read_text().splitlines()
        if l.strip() and not l.strip().startswith("#")
    ]


def ignored(rel, patterns):
    """Docker's rule: the last matching pattern wins; `!` re-includes; a directory pattern
    covers what is under it."""
    verdict = False
    for p in patterns:
        negate = p.startswith("!")
        p = p.lstrip("!").strip("/")
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(x, p) for x in prefixes):
            verdict = not negate
    return verdict


def context_files():
    """The files of a clean checkout (git's index), less .dockerignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    patterns = ignore_patterns()
    return sorted(f for f in listed.split("\0") if f and not ignored(f, patterns))


def copy_from_context(sources, dest, files):
    for src in sources:
        src = src.strip("/") if src not in (".", "./") else ""
        picked = [f for f in files if not src or f == src or f.startswith(src + "/")]
        if not picked:
            raise SystemExit(
                f"docker-replay: COPY {src or '.'}: no such file or directory in the build context"
            )
        for f in picked:
            if src and f == src and not dest.endswith("/") and len(sources) == 1:
                target = pathlib.Path(dest)
            elif src and f == src:
                target = pathlib.Path(dest) / pathlib.Path(f).name
            else:
                target = pathlib.Path(dest) / (f[len(src) + 1 :] if src else f)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, target, follow_symlinks=False)


def in_stage(stage, path):
    """A path of the image as the replay holds it: under the stage's WORKDIR, or the shared
    target directory for `<WORKDIR>/target`."""
    path = path if path.startswith("/") else os.path.join(stage.workdir, path)
    target = os.environ.get("CARGO_TARGET_DIR")
    rel = os.path.relpath(path, stage.workdir)
    if rel.startswith(".."):
        raise SystemExit(
            f"docker-replay: {path}: outside stage {stage.label()}'s WORKDIR {stage.workdir}; the replay holds only the WORKDIR"
        )
    if target and (rel == "target" or rel.startswith("target/")):
        return pathlib.Path(target) / rel[len("target") :].lstrip("/")
    return pathlib.Path(stage.dir) / rel


def check_toolchain(image):
    m = re.match(r"rust:(\d+\.\d+)", image)
    if not m:
        return
    have = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout
    if f" {m.group(1)}." not in have:
        print(f"docker-replay: note: FROM {image}, but this machine has {have.strip()}")


def needed(stages):
    """The stages the final one is built from (FROM and COPY --from), final excluded."""
    by_name = {s.name: s for s in stages if s.name}
    want, todo = set(), [stages[-1]]
    while todo:
        s = todo.pop()
        refs = [s.image] + [
            copy_args(a)[0].get("from", "") for k, a in s.steps if k == "COPY"
        ]
        for r in refs:
            dep = by_name.get(r) or (stages[int(r)] if r.isdigit() else None)
            if dep is not None and dep.index not in want:
                want.add(dep.index)
                todo.append(dep)
    return [s for s in stages if s.index in want]


def replay_stage(stage, stages, files, scratch, run):
    by_name = {s.name: s for s in stages if s.name}
    base = by_name.get(stage.image)
    stage.dir = tempfile.mkdtemp(prefix=f"stage-{stage.label()}-", dir=scratch)
    if base is not None:
        shutil.copytree(base.dir, stage.dir, dirs_exist_ok=True, symlinks=True)
        stage.workdir, stage.env = base.workdir, dict(base.env)
    else:
        check_toolchain(stage.image)
    for keyword, arg in stage.steps:
        if keyword == "WORKDIR":
            stage.workdir = os.path.join(stage.workdir, arg)
        elif keyword == "ENV":
            key, _, value = arg.partition("=") if "=" in arg.split()[0] else arg.partition(" ")
            stage.env[key.strip()] = value.strip().strip('"')
        elif keyword == "COPY":
            opts, sources, dest = copy_args(arg)
            dest_path = str(in_stage(stage, dest)) + ("/" if dest.endswith("/") else "")
            print(f"docker-replay: [{stage.label()}] COPY {arg}", flush=True)
            if "from" in opts:
                src_stage = by_name.get(opts["from"]) or stages[int(opts["from"])]
                for src in sources:
                    path = in_stage(src_stage, src)
                    if not path.exists():
                        raise SystemExit(
                            f"docker-replay: COPY --from={opts['from']} {src}: not produced by that stage"
                        )
                    if run:
                        target = pathlib.Path(dest_path)
                        if dest_path.endswith("/") or target.is_dir():
                            target = target / path.name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, target)
            else:
                copy_from_context(sources, dest_path if run else str(pathlib.Path(scratch) / "unused"), files)
        elif keyword == "RUN" and run:
            print(f"docker-replay: [{stage.label()}] RUN {arg}", flush=True)
            env = dict(os.environ, **stage.env)
            done = subprocess.run(["sh", "-c", arg], cwd=in_stage(stage, "."), env=env)
            if done.returncode != 0:
                raise SystemExit(
                    f"docker-replay: [{stage.label()}] RUN failed with exit code {done.returncode}: {arg}"
                )


def main():
    dockerfile = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "Dockerfile"
    stages = stages_of(dockerfile.read_text())
    files = context_files()
    with tempfile.TemporaryDirectory(prefix="docker-replay-") as scratch:
        for stage in needed(stages):
            replay_stage(stage, stages, files, scratch, run=True)
        final = stages[-1]
        final.dir = tempfile.mkdtemp(prefix="stage-final-", dir=scratch)
        # The runtime stage: its COPY sources must exist; its RUNs change a system, not run.
        replay_stage(final, stages, files, scratch, run=False)
    print(f"docker-replay: {dockerfile.name}: the build stages ran and every COPY source exists")


if __name__ == "__main__":
    main()
