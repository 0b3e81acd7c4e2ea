"""One reading of a device / dtype setting and of a local judge model's source for every model that
loads: the cases on which the copies (encode, the hf judge, `sama sample`, the trainer's setup; the
hf and vllm judge backends) used to differ."""
from __future__ import annotations

import pytest
import torch

from pipeline.config_base import ConfigError
from pipeline.devices import resolve_device, resolve_dtype

NO_GPU = not torch.cuda.is_available()


def test_auto_and_cpu():
    assert resolve_device("cpu", "encode.device") == torch.device("cpu")
    assert resolve_device("auto", "encode.device").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", torch.device("cpu"), "encode.dtype") == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu"), "encode.dtype") == torch.bfloat16


@pytest.mark.skipif(not NO_GPU, reason="checks the refusal on a machine without a GPU")
@pytest.mark.parametrize("value", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_a_gpu_is_refused_naming_the_field(value):
    # encode and `sama sample` accepted "cuda:0" here (only the bare "cuda" was checked) and failed on
    # the first tensor moved; the trainer ran "cuda:1" on the CPU.
    with pytest.raises(ConfigError, match=r"train\.device=.*no GPU"):
        resolve_device(value, "train.device")


def test_an_unknown_device_name_is_a_config_error():
    # encode raised torch's bare RuntimeError, without the field
    with pytest.raises(ConfigError, match=r"encode\.device='gpu' is not a torch device"):
        resolve_device("gpu", "encode.device")


@pytest.mark.parametrize("value", ["tensor", "float", "int8"])
def test_a_dtype_outside_the_list_is_refused(value):
    # getattr(torch, "tensor") returned the function torch.tensor as a dtype
    with pytest.raises(ConfigError, match=r"judge\.hf_dtype"):
        resolve_dtype(value, torch.device("cpu"), "judge.hf_dtype")


def test_the_copies_use_the_one_reading():
    from sama import dist, sample
    from stages.encode import encoders
    from stages.judge import hf_backend
    from stages.judge.hf_backend import HFModelError

    assert sample.resolve_device is resolve_device and dist.resolve_device is resolve_device
    with pytest.raises(ConfigError, match=r"encode\.device"):
        encoders.resolve_device("gpu")
    with pytest.raises(HFModelError, match=r"judge\.hf_device"):  # the hf judge's own error kind
        hf_backend._resolve_device("gpu")
    assert encoders.resolve_dtype("float16", torch.device("cpu")) == torch.float16


def test_trainer_setup_reads_the_device_as_the_others(monkeypatch):
    from sama import dist

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist.setup("cpu").device == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"train\.device"):
        dist.setup("gpu")


def test_model_source_checks_a_directory_for_both_backends(tmp_path):
    from stages.judge.local_model import model_source

    assert model_source("Qwen/Qwen2.5-VL-3B-Instruct", None, "judge.vllm_model_path") == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert model_source("m", str(tmp_path), "judge.vllm_model_path") == str(tmp_path.resolve())
    # the vllm backend handed a missing path to vLLM, which took it for a hub name
    with pytest.raises(ConfigError, match=r"judge\.vllm_model_path=.*not a directory"):
        model_source("m", str(tmp_path / "missing"), "judge.vllm_model_path")


def test_token_texts_decode_each_id_once():
    from stages.judge.local_model import TokenTexts

    class Tokenizer:
        calls = 0

        def decode(self, ids, skip_special_tokens):
            Tokenizer.calls += 1
            assert skip_special_tokens is False  # both backends keep special tokens in logprobs
            return f"<{ids[0]}>"

    texts = TokenTexts(Tokenizer())
    assert [texts(7), texts(7), texts(8)] == ["<7>", "<7>", "<8>"]
    assert Tokenizer.calls == 2


def test_fail_says_error_and_exits_2(capsys):
    import typer

    from pipeline.cli_base import fail

    with pytest.raises(typer.Exit) as e:
        fail("--weights x: use ema or model")
    assert e.value.exit_code == 2
    assert capsys.readouterr().err == "error: --weights x: use ema or model\n"
