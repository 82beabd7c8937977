"""Conversion: QuantDesk's convert() writes the same tensors as llama.cpp's converter run directly;
bad folders fail before the converter starts with a message naming the file; cancel and failure
leave nothing; the source is never modified; no code from the model folder runs."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.errors import Cancelled, ConversionError, DiskSpaceError, ModelFileError, QuantDeskError
from app.core.jobs import CancelToken, Progress
from app.core.quant.convert import PICKLE_WARNING, convert, converter_dir
from tests.support.hf_models import tiny_hf_folder


def tensor_table(path: Path) -> dict[str, tuple[int, tuple[int, ...], str]]:
    """name -> (ggml type, shape, sha256 of the data) of every tensor of a GGUF file."""
    import gguf

    reader = gguf.GGUFReader(path, "r")
    return {t.name: (int(t.tensor_type), tuple(int(d) for d in t.shape), hashlib.sha256(t.data.tobytes()).hexdigest())
            for t in reader.tensors}


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def direct_convert(folder: Path, out: Path, outtype: str) -> Path:
    """llama.cpp's convert_hf_to_gguf.py as its users run it (its own gguf-py, no QuantDesk code)."""
    subprocess.run([sys.executable, str(converter_dir() / "convert_hf_to_gguf.py"), str(folder), "--outtype", outtype,
                    "--outfile", str(out)], check=True, capture_output=True, timeout=300)
    return out


def assert_same_tensors(ours: Path, theirs: Path) -> None:
    a, b = tensor_table(ours), tensor_table(theirs)
    assert list(a) == list(b)  # names, in the same order
    for name in a:
        assert a[name] == b[name], name


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {arch: tiny_hf_folder(arch, root / arch) for arch in ("llama", "qwen2", "gemma", "phi3")}


def test_starter_folder_converts_like_llama_cpp(starter_hf: Path, starter_f16: Path, tmp_path: Path) -> None:
    before = folder_digest(starter_hf)
    theirs = direct_convert(starter_hf, tmp_path / "direct.gguf", "f16")
    assert_same_tensors(starter_f16, theirs)
    assert folder_digest(starter_hf) == before


@pytest.mark.parametrize(("arch", "outtype"), [("llama", "f16"), ("qwen2", "bf16"), ("gemma", "q8_0"), ("phi3", "f32")])
def test_tiny_architectures_convert_like_llama_cpp(arch: str, outtype: str, tiny_folders: dict[str, Path], tmp_path: Path) -> None:
    events: list[Progress] = []
    result = convert(tiny_folders[arch], tmp_path / f"ours-{outtype}.gguf", outtype=outtype, progress=events.append)
    theirs = direct_convert(tiny_folders[arch], tmp_path / "direct.gguf", outtype)
    assert_same_tensors(result.path, theirs)
    assert any(e.unit == "tensor" and e.done > 0 for e in events) and any(e.unit == "B" for e in events)
    assert result.peak_rss_bytes > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["direct.gguf", f"ours-{outtype}.gguf"]  # no partial left


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_bad_folders_are_named_with_the_cause(tiny_folders: dict[str, Path], tmp_path: Path) -> None:
    base = tiny_folders["llama"]
    cases: dict[str, tuple[Path, str]] = {}

    f = _copy(base, tmp_path / "no-config")
    (f / "config.json").unlink()
    cases["missing config"] = (f, "config.json: missing")

    f = _copy(base, tmp_path / "bad-json")
    (f / "config.json").write_text("{not json")
    cases["bad config"] = (f, "not valid JSON")

    f = _copy(base, tmp_path / "alien")
    cfg = json.loads((f / "config.json").read_text())
    (f / "config.json").write_text(json.dumps({**cfg, "architectures": ["AlienformerForCausalLM"]}))
    cases["unsupported architecture"] = (f, "'AlienformerForCausalLM' is not supported")

    f = _copy(base, tmp_path / "no-tokenizer")
    (f / "tokenizer.model").unlink()
    cases["missing tokenizer"] = (f, "no tokenizer")

    f = _copy(base, tmp_path / "truncated")
    data = (f / "model.safetensors").read_bytes()
    (f / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases["truncated safetensors"] = (f, "truncated safetensors file")

    f = _copy(base, tmp_path / "garbage")
    (f / "model.safetensors").write_bytes(b"\xff" * 4096)
    cases["corrupt safetensors"] = (f, "corrupt safetensors file")

    f = _copy(base, tmp_path / "no-weights")
    (f / "model.safetensors").unlink()
    cases["no weights"] = (f, "no model weights")

    for case, (folder, expected) in cases.items():
        out = tmp_path / f"{folder.name}.gguf"
        with pytest.raises(ModelFileError) as err:
            convert(folder, out)
        assert expected in str(err.value), case
        assert folder.name in str(err.value), case
        assert not out.exists(), case


def test_pickle_weights_need_the_opt_in(tiny_folders: dict[str, Path], tmp_path: Path) -> None:
    f = _copy(tiny_folders["llama"], tmp_path / "pickled")
    (f / "model.safetensors").rename(f / "pytorch_model.bin")  # never loaded: refused by name first
    with pytest.raises(ModelFileError) as err:
        convert(f, tmp_path / "out.gguf")
    assert PICKLE_WARNING in str(err.value) and "--allow-pickle" in str(err.value)


def test_output_inside_the_source_is_refused(tiny_folders: dict[str, Path]) -> None:
    with pytest.raises(QuantDeskError, match="outside the source folder"):
        convert(tiny_folders["llama"], tiny_folders["llama"] / "model.gguf")


def test_disk_space_preflight(tiny_folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(DiskSpaceError, match="free disk space"):
        convert(tiny_folders["llama"], tmp_path / "out.gguf")
    assert list(tmp_path.iterdir()) == []


def test_cancel_leaves_nothing_and_the_source_unchanged(tiny_folders: dict[str, Path], tmp_path: Path) -> None:
    src = tiny_folders["qwen2"]
    before = folder_digest(src)
    cancel = CancelToken()

    def on_progress(p: Progress) -> None:
        if p.unit == "tensor" and p.done >= 1:
            cancel.cancel()

    with pytest.raises(Cancelled):
        convert(src, tmp_path / "out.gguf", progress=on_progress, cancel=cancel)
    assert list(tmp_path.iterdir()) == []
    assert folder_digest(src) == before


def test_converter_failure_surfaces_its_reason_and_leaves_nothing(tiny_folders: dict[str, Path], tmp_path: Path) -> None:
    f = _copy(tiny_folders["phi3"], tmp_path / "phi3-no-class")
    (f / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))  # phi3's converter reads tokenizer_class
    out = tmp_path / "out" / "model.gguf"
    with pytest.raises(ConversionError) as err:
        convert(f, out)
    assert "converter failed" in str(err.value) and "tokenizer_class" in str(err.value)
    assert list(out.parent.iterdir()) == []


def test_code_in_the_model_folder_never_runs(tiny_folders: dict[str, Path], tmp_path: Path) -> None:
    f = _copy(tiny_folders["llama"], tmp_path / "remote-code")
    marker = tmp_path / "pwned"
    (f / "tokenization_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                            "from transformers import PreTrainedTokenizer as EvilTokenizer\n")
    (f / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "EvilTokenizer",
                                                         "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}}))
    (f / "tokenizer.model").rename(f / "tokenizer.model.bak")
    (f / "vocab.json").write_text("{}")  # a tokenizer file, so the folder passes the pre-flight check
    with pytest.raises(ConversionError):
        convert(f, tmp_path / "out.gguf")
    assert not marker.exists()


@pytest.mark.parametrize("pickle_name", ["pytorch_model.bin", "training_args.pt"])
def test_a_pickle_beside_safetensors_needs_the_opt_in_too(tiny_folders: dict[str, Path], tmp_path: Path,
                                                          pickle_name: str) -> None:
    """The converter reads pytorch_model*.bin whenever it finds no model*.safetensors it likes, so a
    pickle anywhere in the folder is refused without --allow-pickle, naming the file."""
    f = _copy(tiny_folders["llama"], tmp_path / "mixed")
    (f / pickle_name).write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ModelFileError) as err:
        convert(f, tmp_path / "out.gguf")
    assert pickle_name in str(err.value) and "--allow-pickle" in str(err.value)
    assert not (tmp_path / "out.gguf").exists()
    from app.core.quant.convert import inspect_folder

    info = inspect_folder(f, allow_pickle=True)
    assert info.pickle and info.warnings and info.weight_files[0].suffix == ".safetensors"
