"""Training precision by hardware: bf16 only where the CPU has it natively, fp32 otherwise; the user's choice wins."""

from __future__ import annotations

import subprocess
import sys

import pytest

from paft_rl import precision
from paft_rl.configs import PaftGRPOConfig, PaftSFTConfig
from paft_rl.trainers.recipes import parse_recipe

AVX512_BF16 = ("x86_64", frozenset({"avx2", "avx512f", "avx512_bf16"}), "AVX512")
AVX2_ONLY = ("x86_64", frozenset({"avx2", "fma"}), "AVX2")
AVX512_NO_BF16 = ("x86_64", frozenset({"avx2", "avx512f"}), "AVX512")


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to run on a given CPU: (machine, flags, torch kernel level)."""

    def use(kind):
        machine, flags, capability = kind
        monkeypatch.setattr(precision.platform, "machine", lambda: machine)
        monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
        monkeypatch.setattr(precision, "cpu_capability", lambda: capability)
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        monkeypatch.setattr(precision, "_ANNOUNCED", set())  # each test sees its note printed

    return use


@pytest.mark.parametrize(("kind", "native"), [(AVX512_BF16, True), (AVX2_ONLY, False), (AVX512_NO_BF16, False),
                                              (("aarch64", frozenset({"bf16", "sve"}), "SVE256"), True)])
def test_native_bf16_by_cpu(cpu, kind, native):
    cpu(kind)
    assert precision.cpu_has_native_bf16() is native


def test_onednn_restriction_counts_as_no_native_bf16(cpu, monkeypatch):
    cpu(AVX512_BF16)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert precision.cpu_has_native_bf16() is False


def test_restricted_kernels_are_seen_for_real():
    """With the kernels restricted the way an AVX2 machine is imitated, torch and paft-rl both see AVX2."""
    code = "from paft_rl import precision; print(precision.cpu_capability(), precision.cpu_has_native_bf16())"
    env = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["AVX2", "False"]


@pytest.mark.parametrize("config_class", [PaftSFTConfig, PaftGRPOConfig])
@pytest.mark.parametrize(("kind", "bf16"), [(AVX512_BF16, True), (AVX2_ONLY, False)])
def test_unset_precision_follows_the_cpu(cpu, capsys, tmp_path, config_class, kind, bf16):
    cpu(kind)
    config = config_class(output_dir=str(tmp_path), task="synth_arith", use_cpu=True, report_to="none")
    assert config.bf16 is bf16
    assert ("training in bf16" if bf16 else "training in fp32") in config.precision_note
    assert capsys.readouterr().err == ""  # said when training starts, not when a recipe is parsed


@pytest.mark.parametrize(("kind", "explicit"), [(AVX2_ONLY, True), (AVX512_BF16, False)])
def test_explicit_setting_wins(cpu, capsys, tmp_path, kind, explicit):
    cpu(kind)
    config = PaftSFTConfig(output_dir=str(tmp_path), task="synth_arith", use_cpu=True, bf16=explicit)
    assert config.bf16 is explicit
    assert config.precision_note is None


@pytest.mark.parametrize(("kind", "yaml_line", "bf16"),
                         [(AVX2_ONLY, "", False), (AVX512_BF16, "", True), (AVX2_ONLY, "bf16: true\n", True),
                          (AVX512_BF16, "bf16: false\n", False)])
def test_recipe_reaches_the_trl_config(cpu, tmp_path, kind, yaml_line, bf16):
    """Through the recipe parser every training command uses (sft, grpo, and the workflows that run them)."""
    cpu(kind)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model_name_or_path: m\ntask: synth_arith\noutput_dir: {tmp_path / 'out'}\n{yaml_line}")
    for config_class in (PaftSFTConfig, PaftGRPOConfig):
        args, _ = parse_recipe(config_class, ["--config", str(recipe)])
        assert args.bf16 is bf16
        assert args.fp16 is False


def test_the_note_is_printed_once_for_a_workflow_of_many_stages(cpu, capsys, tmp_path):
    cpu(AVX2_ONLY)
    notes = [PaftSFTConfig(output_dir=str(tmp_path), task="synth_arith", use_cpu=True).precision_note
             for _ in range(3)]
    for note in notes:
        precision.announce(note)
    assert capsys.readouterr().err.count("training in fp32") == 1
