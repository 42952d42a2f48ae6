"""Named models: the catalog's names are the config tree's, chunks are joined in order and checked before
anything parses them, a missing or wrong chunk is one clear error with nothing left behind, and the default
follows the CPU (the code model with bf16 units, where installed). The real Qwen2.5-Coder test runs only where
`make setup` (on such a CPU) or `make model-qwen` installed it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from superpie.completion.config import MODEL_NAMES
from superpie.completion.model import catalog
from superpie.completion.model.catalog import (
    MODELS,
    QWEN_CODER,
    SMOLLM2,
    ModelLoadError,
    NamedModel,
    choose_default,
    installed,
    join_checked,
    package_files,
)

ROOT = Path(__file__).resolve().parents[3]


def test_the_config_tree_names_the_catalog_s_models() -> None:
    assert tuple(MODELS) == MODEL_NAMES


def test_the_requirements_file_pins_every_chunk_with_a_wheel_hash() -> None:
    lines = [ln for ln in (ROOT / "models" / "qwen2.5-coder-0.5b.txt").read_text().splitlines() if ln and ln[0] != "#"]
    pinned = [ln.split()[0] for ln in lines]
    assert pinned == [f"{p}=={QWEN_CODER.version}" for p in QWEN_CODER.packages]
    assert all(len(ln.split("--hash=sha256:")[1]) == 64 for ln in lines)


def parts(tmp_path: Path, chunks: list[bytes]) -> list[Path]:
    out = []
    for i, chunk in enumerate(chunks):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(chunk)
        out.append(p)
    return out


def test_chunks_are_joined_in_order_and_checked(tmp_path: Path) -> None:
    chunks = [b"GGUF" + bytes(range(200)), b"middle" * 1000, b"end"]
    whole = b"".join(chunks)
    target = tmp_path / "out" / "model.gguf"
    got = join_checked(parts(tmp_path, chunks), target, hashlib.sha256(whole).hexdigest(), len(whole))
    assert got == target and target.read_bytes() == whole


@pytest.mark.parametrize("swap", [False, True])
def test_a_wrong_or_reordered_chunk_is_one_error_and_no_file(tmp_path: Path, swap: bool) -> None:
    chunks = [b"GGUF" + bytes(range(200)), b"middle" * 1000]
    whole = b"".join(chunks)
    bad = chunks[::-1] if swap else [chunks[0], b"middlE" * 1000]
    target = tmp_path / "model.gguf"
    with pytest.raises(ModelLoadError, match="not the pinned ones; nothing was loaded"):
        join_checked(parts(tmp_path, bad), target, hashlib.sha256(whole).hexdigest(), len(whole))
    assert not target.exists() and not list(tmp_path.glob("model.gguf*"))


def test_a_missing_package_names_the_install_command() -> None:
    ghost = NamedModel("ghost", "Ghost", "ghost-v1", ("superpie-no-such-package",), "1.0", "make model-ghost")
    with pytest.raises(ModelLoadError, match="not installed.*make model-ghost"):
        package_files(ghost, ".bin")


def test_installed_needs_every_package_at_its_pinned_version() -> None:
    assert installed(SMOLLM2)  # make setup installs it everywhere
    assert not installed(NamedModel("ghost", "Ghost", "ghost-v1", ("superpie-no-such-package",), "1.0", "x"))
    other = NamedModel("old", "Old", "old-v1", SMOLLM2.packages, "0.0.1", "x")
    assert not installed(other)


def test_the_default_is_the_code_model_only_with_bf16_units_and_only_where_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(catalog, "installed", lambda model: True)
    assert choose_default(bf16=True).model == QWEN_CODER and choose_default(bf16=True).note is None
    assert choose_default(bf16=False).model == SMOLLM2 and choose_default(bf16=False).note is None
    monkeypatch.setattr(catalog, "installed", lambda model: model != QWEN_CODER)
    stand_in = choose_default(bf16=True)
    assert (stand_in.model, stand_in.best) == (SMOLLM2, QWEN_CODER)
    assert stand_in.note is not None and "qwen2.5-coder-0.5b" in stand_in.note and "make model-qwen" in stand_in.note
    assert choose_default(bf16=False).model == SMOLLM2


@pytest.fixture
def asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The named models whose conversion `load_model` asks for, in order; each is a tiny random Qwen2."""
    from test_model_loading import save_tiny

    from superpie.completion.model import loading

    names: list[str] = []

    def converted(model: NamedModel) -> Path:
        names.append(model.name)
        return save_tiny("qwen2", tmp_path / "converted")

    monkeypatch.setattr(loading, "ensure_model", converted)
    return names


def test_no_model_named_loads_the_default_for_this_cpu(asked: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from superpie.completion.model import loading

    monkeypatch.setattr(catalog, "installed", lambda model: True)
    for bf16, name in ((True, QWEN_CODER.name), (False, SMOLLM2.name)):
        monkeypatch.setattr(loading, "native_bf16", lambda bf16=bf16: bf16)
        lm = loading.load_model(None, dtype="float32")
        assert asked[-1] == name and lm.name == MODELS[name].display


@pytest.mark.real_model
@pytest.mark.skipif(not installed(QWEN_CODER), reason="Qwen2.5-Coder is not installed (make model-qwen)")
def test_qwen_coder_loads_on_the_fast_runner_with_its_fim_template() -> None:
    from superpie.completion.model.loading import load_model

    lm = load_model("qwen2.5-coder-0.5b", layout="fim")
    assert lm.name == "Qwen2.5-Coder-0.5B-Instruct" and lm.fast
    assert lm.fim is not None and lm.fim.family == "qwen2.5-coder"
    assert lm.tokenizer.token_to_id("<|fim_pad|>") in lm.eos_ids


def test_a_model_name_loads_the_catalog_s_conversion(asked: list[str]) -> None:
    from superpie.completion.model import loading

    lm = loading.load_model("qwen2.5-coder-0.5b", dtype="float32", layout="prefix")
    assert asked == ["qwen2.5-coder-0.5b"] and lm.name == "Qwen2.5-Coder-0.5B-Instruct" and lm.fim is None
    with pytest.raises(ModelLoadError, match="no fill-in-the-middle tokens"):
        loading.load_model("qwen2.5-coder-0.5b", dtype="float32", layout="fim")
