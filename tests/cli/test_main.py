"""The CLI as a user runs it: a real subprocess, the real engine, exit codes and messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.core import paths
from app.core.chat.store import ChatStore
from app.core.engine import cpu_variants
from tests.conftest import THREADS


def quantdesk(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=timeout)


def test_chat_json_greedy_matches_llama_cpp_python(starter_model: Path) -> None:
    prompt = "Give me a synonym for happy."
    result = quantdesk("chat", str(starter_model), "--prompt", prompt, "--temperature", "0", "--max-tokens", "40",
                       "--ctx", "2048", "--gpu-layers", "0", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(out) == {"text", "reasoning", "reasoning_tokens", "prompt_tokens", "completion_tokens", "ttft_s",
                        "tokens_per_s", "cpu_variant", "drafted_tokens", "accepted_tokens", "image_tokens", "devices"}
    assert out["image_tokens"] == 0 and [d["kind"] for d in out["devices"]] == ["cpu"]
    assert out["reasoning"] == "" and out["reasoning_tokens"] == 0  # the starter does not reason
    assert out["drafted_tokens"] == 0  # speculation off (tests/conftest.py): no "speculation" line either
    assert out["cpu_variant"] == cpu_variants.choose().variant.name  # the build the in-process reference runs too
    assert out["completion_tokens"] > 0 and out["prompt_tokens"] > 0
    # the CLI's default repeat penalty is 1.1; the reference uses the same value
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(starter_model), n_ctx=2048, n_threads=THREADS, n_gpu_layers=0, verbose=False)
    ref = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], temperature=0.0, max_tokens=40, repeat_penalty=1.1)
    llm.close()
    assert out["text"] == ref["choices"][0]["message"]["content"]


def test_chat_json_puts_reasoning_apart_and_thinking_can_be_turned_off(starter_model: Path, tmp_path: Path) -> None:
    from tests.core.engine.test_reasoning import OPENS_WITH_SWITCH
    from tests.core.engine.test_template_limits import with_template

    thinker = with_template(starter_model, tmp_path / "thinker.gguf", OPENS_WITH_SWITCH)
    common = ["chat", str(thinker), "--prompt", "Write a long story about a dragon.", "--temperature", "0",
              "--max-tokens", "40", "--ctx", "1024", "--gpu-layers", "0", "--json"]
    out = json.loads(quantdesk(*common, "--thinking-budget", "6").stdout.strip().splitlines()[-1])
    assert out["reasoning"] and out["text"] and 0 < out["reasoning_tokens"] <= 7
    assert all(tag not in out["text"] + out["reasoning"] for tag in ("<think>", "</think>"))
    off = json.loads(quantdesk(*common, "--thinking", "off").stdout.strip().splitlines()[-1])
    assert off["reasoning"] == "" and off["text"]
    bad = quantdesk(*common, "--thinking-budget", "lots")
    assert bad.returncode == 2 and "--thinking-budget" in bad.stderr and "Traceback" not in bad.stderr


def test_chat_json_answers_an_image_with_a_vision_model(tmp_path: Path) -> None:
    """``--image`` with the tiny vision pair: the projector beside the model is loaded and the
    image's tokens are counted."""
    import shutil

    from tests.support.tiny_vision import IMAGE_TOKENS, tiny_vision_pair

    pair = tiny_vision_pair()
    model = Path(shutil.copy(pair.model, tmp_path / pair.model.name))
    shutil.copy(pair.projector, tmp_path / pair.projector.name)
    result = quantdesk("chat", str(model), "--ctx", "256", "--prompt", "what is this?", "--image", str(_picture(tmp_path)),
                       "--json", "--temperature", "0", "--max-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["image_tokens"] == IMAGE_TOKENS


def test_chat_plain_text_with_system_prompt(starter_model: Path) -> None:
    result = quantdesk("chat", "starter", "--prompt", "Say hello.", "--system", "You are terse.", "--temperature", "0",
                       "--max-tokens", "20", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_interactive_prompt_loop(starter_model: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "app", "chat", str(starter_model), "--temperature", "0", "--max-tokens", "12"],
                          input="Hello there\nWhat did I just say?\n\n", capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("> ") >= 2  # two prompts answered
    assert "tok/s" in proc.stderr
    store = ChatStore(paths.database_path())  # saved with the GUI's conversations (a ChatSession)
    [conv] = store.list_conversations()
    assert conv.title == "Hello there"
    assert [(m.role, m.status) for m in store.messages(conv.id)] == [("user", "complete"), ("assistant", "complete")] * 2
    store.close()


def _bad_input_cases(tmp_path: Path, starter_model: Path) -> dict[str, tuple[list[str], str]]:
    text_file = tmp_path / "notes.gguf"
    text_file.write_text("hello, I am not a model")
    truncated = tmp_path / "truncated.gguf"
    with starter_model.open("rb") as src, truncated.open("wb") as dst:
        dst.write(src.read(4_000_000))
    return {
        "missing": ([str(tmp_path / "nope.gguf")], "no such file"),
        "not gguf": ([str(text_file)], "not a GGUF file"),
        "truncated": ([str(truncated)], "truncated"),
        "absurd ctx": ([str(starter_model), "--ctx", "100000000000"], "context size"),
        "huge ctx": ([str(starter_model), "--ctx", "16000000"], "does not fit"),
        "negative temp": ([str(starter_model), "--temperature", "-1"], "--temperature"),
        "bad lookup": ([str(starter_model), "--lookup", "lots"], "--lookup lots: must be auto, 0 (off)"),
        "not an image": ([str(starter_model), "--image", str(text_file)], "notes.gguf: not an image of a type"),
        "blind model": ([str(starter_model), "--image", str(_picture(tmp_path))], "cannot see images"),
    }


def _picture(tmp_path: Path) -> Path:
    from tests.support.tiny_vision import png_bytes

    path = tmp_path / "picture.png"
    path.write_bytes(png_bytes())
    return path


@pytest.mark.parametrize("case", ["missing", "not gguf", "truncated", "absurd ctx", "huge ctx", "negative temp",
                                  "bad lookup", "not an image", "blind model"])
def test_bad_input_exits_2_with_a_clear_message(case: str, tmp_path: Path, starter_model: Path) -> None:
    args, expected = _bad_input_cases(tmp_path, starter_model)[case]
    result = quantdesk("chat", *args, "--prompt", "hi")
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    if case not in ("absurd ctx", "negative temp", "bad lookup", "not an image"):  # the value is named instead
        assert Path(args[0]).name in result.stderr


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "alien.gguf"
    writer = gguf.GGUFWriter(path, "alienformer")
    writer.add_block_count(1)
    writer.add_context_length(128)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = quantdesk("chat", str(path), "--prompt", "hi")
    assert result.returncode == 2
    assert "alien.gguf" in result.stderr and "architecture" in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_is_installed() -> None:
    exe = shutil.which("quantdesk", path=str(Path(sys.executable).parent))
    assert exe is not None
    result = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "QuantDesk" in result.stdout


HOSTILE_NAME = "evil\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x9b31m\x1bc\x00\x08end"


def test_inspect_prints_strings_from_the_file_without_terminal_control_sequences(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "hostile.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(HOSTILE_NAME)
    writer.add_block_count(1)
    writer.add_tokenizer_model("gpt2\x1b[8m")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = quantdesk("inspect", str(path))
    assert result.returncode == 0, result.stderr
    assert "evilredend" in result.stdout and "gpt2" in result.stdout
    assert not any(c in result.stdout for c in "\x1b\x9b\x07\x00\x08")


def test_inspect_refuses_the_49_byte_liar_at_once(tmp_path: Path) -> None:
    import struct

    path = tmp_path / "liar.gguf"
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"a" + struct.pack("<IIQ", 9, 4, 2**40)
    path.write_bytes(data.ljust(49, b"\0"))
    result = quantdesk("inspect", str(path), timeout=30)
    assert result.returncode == 2
    assert "liar.gguf" in result.stderr and "remain in the file" in result.stderr
    assert "Traceback" not in result.stderr
