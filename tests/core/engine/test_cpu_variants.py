"""The portable engine: CPU builds chosen by what the CPU reports, the baseline chats, an engine
that dies of SIGILL steps down to a safer build and the conversation goes on, and a build is marked
bad for the machine only when the starter model's self-check dies on it too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.engine import SamplingParams, cpu_policy, selfcheck
from app.core.engine import cpu_variants as cv
from app.core.engine.client import EngineClient
from app.core.errors import EngineCrashed, EngineError
from tests.conftest import load_params

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, seed=1)
HELLO = [{"role": "user", "content": "Name three colours."}]

AMX_XEON = ("flags : fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma bmi2 avx2 avx512f avx512cd avx512bw avx512dq "
            "avx512vl avx512vbmi avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8 avx_vnni")
AVX2_LAPTOP = "flags : fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma bmi2 avx2"
AVX512_NO_OS_STATE = "flags : fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma bmi2 avx2 avx_vnni"  # what Linux lists
OLD_CPU = "flags : fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt"


def best_supported(cpuinfo: str) -> str:
    flags = cv.cpu_flags(cpuinfo)
    return next(v.name for v in cv.X86_VARIANTS if cv.supported(v, flags))


def test_each_cpu_gets_a_build_it_can_run_and_never_amx() -> None:
    assert best_supported(AMX_XEON) == "icelake"  # AVX-512 without the AMX path
    assert best_supported(AVX2_LAPTOP) == "haswell"
    assert best_supported(AVX512_NO_OS_STATE) == "alderlake"
    assert best_supported(OLD_CPU) == "sse42"
    assert not any("AMX" in flag for v in cv.X86_VARIANTS for flag in v.cmake)


@pytest.mark.skipif(not cv.is_x86(), reason="the x86-64 builds")
def test_every_build_is_installed_and_loads_its_own_library() -> None:
    names = [v.name for v in cv.installed()]
    assert names == [v.name for v in cv.X86_VARIANTS]
    code = ("import sys; from app.core.engine import cpu_variants as cv; cv.activate(sys.argv[1]); import llama_cpp; "
            "print(sorted({l.split()[-1] for l in open('/proc/self/maps') if 'ggml-cpu' in l}));"
            "print(llama_cpp.llama_print_system_info().decode())")
    for v in cv.usable():
        out = subprocess.run([sys.executable, "-c", code, v.name], capture_output=True, text=True, check=True).stdout
        mapped, info = out.splitlines()[0], out.splitlines()[1]
        assert str(cv.library_path(v)) in mapped and mapped.count("ggml-cpu") == 1, mapped
        assert ("AVX2 = 1" in info) == ("AVX2" in v.cmake) and ("AVX512 = 1" in info) == ("AVX512" in v.cmake), info


def test_hw_json_names_the_build_and_why(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "app", "hw", "--json"], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    chosen = cv.choose()
    assert data["cpu_variant"]["name"] == chosen.variant.name and data["cpu_variant"]["reason"]
    assert data["cpu_variants"] == [v.name for v in cv.usable()]
    assert cv.baseline().name in data["cpu_variants"]


def test_a_forced_build_that_is_not_installed_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(cv.ENV, "pentium3")
    client = EngineClient(log_path=tmp_path / "engine.log")
    with pytest.raises(EngineError, match="pentium3"):
        client.start()
    proc = subprocess.run([sys.executable, "-m", "app", "chat", "starter", "--prompt", "hi"], capture_output=True, text=True)
    assert proc.returncode == 2 and "pentium3" in proc.stderr and "Traceback" not in proc.stderr


def test_the_baseline_build_chats(starter_model: Path, tmp_path: Path, engine: EngineClient) -> None:
    baseline = EngineClient(log_path=tmp_path / "engine.log", env={**os.environ, cv.ENV: cv.baseline().name})
    try:
        baseline.load(starter_model, load_params())
        slow = baseline.chat(HELLO, GREEDY)
        assert baseline.build_info["cpu_variant"] == cv.baseline().name
        assert "AVX2 = 1" not in baseline.build_info["system_info"]
    finally:
        baseline.close()
    fast = engine.chat(HELLO, GREEDY)
    assert slow.completion_tokens > 0 and slow.text.strip()
    # kernels differ in rounding: the opening words agree, the whole reply need not
    assert slow.text.split()[:2] == fast.text.split()[:2], (slow.text, fast.text)


def _best() -> cv.Variant:
    return cv.usable()[0]


@pytest.mark.skipif(len(cv.usable()) < 2, reason="needs a build above the baseline")
def test_sigill_on_first_decode_steps_down_and_the_reply_comes(starter_model: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    best = _best()
    monkeypatch.setenv("QUANTDESK_SIMULATE_CRASH", f"SIGILL:{best.name}:decode")
    client = EngineClient(log_path=tmp_path / "engine.log")
    try:
        client.load(starter_model, load_params())
        assert client.cpu_variant == best
        reply = client.chat(HELLO, GREEDY)
        assert reply.completion_tokens > 0 and reply.text.strip()
        assert client.cpu_variant == cv.next_safer(best) and client.build_info["cpu_variant"] == client.cpu_variant.name
        notices = client.take_notices()
        assert len(notices) == 1 and "illegal instruction" in notices[0] and best.name in notices[0]
        assert "\n" not in notices[0]
        # the starter's self-check died on it too: marked bad for this machine, the next choice skips it
        assert best.name in cv.bad_variants(cpu_policy.state_path())
        assert cpu_policy.current().variant != best
        assert client.chat(HELLO + [{"role": "assistant", "content": reply.text}, {"role": "user", "content": "One more."}],
                           GREEDY).completion_tokens > 0
    finally:
        client.close()


@pytest.mark.skipif(len(cv.usable()) < 2, reason="needs a build above the baseline")
def test_sigill_from_one_file_does_not_downgrade_the_machine(starter_model: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    odd = tmp_path / "odd-model.gguf"
    os.link(starter_model, odd) if starter_model.stat().st_dev == tmp_path.stat().st_dev else odd.symlink_to(starter_model)
    best = _best()
    monkeypatch.setenv("QUANTDESK_SIMULATE_CRASH", f"SIGILL:{best.name}:decode:odd-model")
    client = EngineClient(log_path=tmp_path / "engine.log")
    try:
        client.load(odd, load_params())
        assert client.chat(HELLO, GREEDY).completion_tokens > 0
        assert client.cpu_variant != best and "only this session" in client.take_notices()[0]
        assert cv.bad_variants(cpu_policy.state_path()) == {}  # the starter runs on it: the machine keeps it
        assert cpu_policy.current().variant == best
    finally:
        client.close()


@pytest.mark.skipif(len(cv.usable()) < 2, reason="needs a build above the baseline")
def test_sigill_while_starting_steps_down(starter_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    best = _best()
    monkeypatch.setenv("QUANTDESK_SIMULATE_CRASH", f"SIGILL:{best.name}:load")
    client = EngineClient(log_path=tmp_path / "engine.log")
    try:
        client.load(starter_model, load_params())
        assert client.cpu_variant == cv.next_safer(best)
        assert client.chat(HELLO, GREEDY).completion_tokens > 0
    finally:
        client.close()


def test_a_sigsegv_on_first_decode_does_not_step_down(starter_model: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    best = _best()
    monkeypatch.setenv("QUANTDESK_SIMULATE_CRASH", f"SIGSEGV:{best.name}:decode")
    client = EngineClient(log_path=tmp_path / "engine.log")
    try:
        client.load(starter_model, load_params())
        with pytest.raises(EngineCrashed, match="SIGSEGV"):
            client.chat(HELLO, GREEDY)
        assert client.cpu_variant == best and client.take_notices() == []
        assert cv.bad_variants(cpu_policy.state_path()) == {}
    finally:
        client.close()


def test_install_self_check_marks_a_dying_build(monkeypatch: pytest.MonkeyPatch) -> None:
    best = _best()
    ok = selfcheck.check(best.name)
    assert ok.ok and not ok.died_of_signal, ok
    env = {**os.environ, "QUANTDESK_SIMULATE_CRASH": f"SIGILL:{best.name}:decode"}
    proc = subprocess.run([sys.executable, "-m", "app.core.engine.selfcheck", "--install"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == (0 if len(cv.usable()) > 1 else 1), proc.stdout + proc.stderr
    assert f"{best.name:<10} FAILED: died of SIGILL" in proc.stdout
    assert best.name in cv.bad_variants(cpu_policy.state_path())
