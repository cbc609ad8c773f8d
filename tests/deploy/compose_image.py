"""The compose image without Docker: deploy/Dockerfile's stages parsed, its COPY lines mirrored
(honouring .dockerignore), a plain install into a fresh virtualenv (tests/deploy/test_compose_services.py)."""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.deploy._support import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages(text: str) -> list[list[Instruction]]:
    """The Dockerfile's instructions per stage (continuation lines joined, comments dropped)."""
    stages: list[list[Instruction]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), args.strip()))
    return stages


def dockerignore_patterns() -> list[str]:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # The subset of .dockerignore's syntax mirrored below; anything else must be taught to ignored().
    unsupported = [p for p in patterns if p.startswith("!") or "**" in p.removeprefix("**/")]
    assert not unsupported, f".dockerignore patterns this test does not mirror: {unsupported}"
    return patterns


def ignored(relative: Path, patterns: list[str]) -> bool:
    text = relative.as_posix()
    for pattern in patterns:
        if pattern.startswith("**/"):
            tail = pattern[3:]
            if any(fnmatch.fnmatch("/".join(relative.parts[i:]), tail) for i in range(len(relative.parts))):
                return True
        elif fnmatch.fnmatch(text, pattern) or fnmatch.fnmatch(relative.parts[0], pattern):
            return True
    return False


def mirror_copy(args: str, workdir: Path, patterns: list[str]) -> None:
    """One `COPY src... dest` from the build context (the repository) into `workdir`."""
    *sources, dest = shlex.split(args)
    assert sources and not any(s.startswith("--") for s in sources), f"COPY {args}: flags are not mirrored"
    target = workdir / dest
    into_folder = dest.endswith("/") or len(sources) > 1
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY {src}: not in the build context"
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                rel = file.relative_to(ROOT)
                if not ignored(rel, patterns):
                    out = target / file.relative_to(path)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, out)
        else:
            out = target / path.name if into_folder else target
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)


@dataclass(frozen=True)
class Image:
    venv: Path
    env: dict[str, str]  # the final stage's ENV
    entrypoint: list[str]
    cmd: list[str]

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def run_checked(argv: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert out.returncode == 0, f"{what} failed ({out.returncode}):\n{(out.stdout + out.stderr)[-4000:]}"
    return out
