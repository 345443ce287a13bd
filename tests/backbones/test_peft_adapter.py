"""PEFT adapters in and out: made by `peft` on tiny transformers models, loaded
into ours (outputs match PEFT's), written by ours (PEFT loads them, outputs
match ours), round trips with identical tensors, and each refusal."""

import json
import shutil
import warnings

import numpy as np
import pytest

import backbones
from backbones.errors import LoRAError
from tests.backbones.test_transformers_export import IDS, MASK, exported_families, save_tiny, tiny_hf_model
from tests.helpers import hidden, randomize_lora

# family -> (transformers head, PEFT target_modules, extra LoraConfig arguments)
PEFT_CASES = {
    "gpt2": ("causal_lm", ["c_attn"], {"fan_in_fan_out": True}),
    "llama": ("causal_lm", ["q_proj", "v_proj"], {}),
    "bert": ("base", ["query", "value"], {}),
    "gemma": ("causal_lm", ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"], {"use_rslora": True}),
}


def test_every_exporting_family_has_a_peft_case():
    # PEFT's module names are per family: a new family must add its case here, or it goes untested.
    assert sorted(PEFT_CASES) == sorted(exported_families())


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (directory of the tiny transformers checkpoint, its transformers head)."""
    root = tmp_path_factory.mktemp("peft")
    out = {}
    for family, (head, _, _) in PEFT_CASES.items():
        out[family] = (save_tiny(tiny_hf_model(family, head), root / family), head)
    return out


def _hf(directory, head):
    import transformers

    auto = {"base": transformers.AutoModel, "causal_lm": transformers.AutoModelForCausalLM}[head]
    return auto.from_pretrained(directory).eval()


def _hf_outputs(model, head):
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK))
    return (out.logits if head == "causal_lm" else out.last_hidden_state).numpy()


def _our_outputs(backbone, head):
    import keras

    x = {"token_ids": IDS, "padding_mask": MASK}
    if backbone.is_encoder:
        x["segment_ids"] = np.zeros_like(IDS)
    out = backbone(x)
    if head == "causal_lm":
        return keras.ops.convert_to_numpy(backbone.compute_logits(out))
    return hidden(out)


def _max_error(a, b):
    real = MASK.astype(bool)
    return float(np.abs(a[real] - b[real]).max())


def make_peft_adapter(directory, head, targets, extra, out):
    """An adapter made by `peft` (random A and B), saved to `out`; returns PEFT's outputs."""
    import peft
    import torch

    torch.manual_seed(1)
    model = peft.get_peft_model(_hf(directory, head), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, **extra))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    model.eval()
    model.save_pretrained(out)
    return _hf_outputs(model, head)


@pytest.mark.parametrize("family", PEFT_CASES)
def test_peft_adapter_loads_into_ours_and_round_trips(family, checkpoints, tmp_path):
    directory, head = checkpoints[family]
    _, targets, extra = PEFT_CASES[family]
    expected = make_peft_adapter(directory, head, targets, extra, tmp_path / "peft")
    ours = backbones.Backbone.from_preset(directory)
    assert _max_error(_our_outputs(ours, head), expected) > 1e-2  # the adapter matters
    ours.load_lora_weights(tmp_path / "peft")
    assert _max_error(_our_outputs(ours, head), expected) < 1e-4
    if family == "gpt2":  # the fused c_attn: q, k and v adapters sharing A
        assert ours.lora_spec.targets == ("query", "key", "value")

    # Back to PEFT's format: the same tensors, bit for bit.
    ours.save_lora_weights(tmp_path / "again")
    from safetensors.numpy import load_file

    original = load_file(tmp_path / "peft" / "adapter_model.safetensors")
    again = load_file(tmp_path / "again" / "adapter_model.safetensors")
    assert sorted(original) == sorted(again)
    for key in original:
        np.testing.assert_array_equal(again[key], original[key], err_msg=key)


OURS_CASES = {
    "gpt2_query_value": ("gpt2", ["query", "value"]),  # c_attn as one rank-2r adapter
    "gpt2_all": ("gpt2", ["query", "value", "attention_output", "ffn"]),  # rank_pattern for c_attn
    "llama_query_value_ffn": ("llama", ["query", "value", "ffn"]),
    "bert_query_value_ffn": ("bert", ["query", "value", "ffn"]),  # BERT's output.dense vs attention.output.dense
    "gemma_query_value": ("gemma", ["query", "value"]),
}


@pytest.mark.parametrize("case", OURS_CASES)
def test_our_adapter_loads_into_peft(case, checkpoints, tmp_path):
    import peft

    family, targets = OURS_CASES[case]
    directory, head = checkpoints[family]
    ours = backbones.Backbone.from_preset(directory)
    ours.enable_lora(2, alpha=3.0, targets=targets)
    randomize_lora(ours, scale=0.3)
    expected = _our_outputs(ours, head)
    ours.save_lora_weights(tmp_path / "adapter", format="peft")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    base = _hf(directory, head)
    assert _max_error(_hf_outputs(base, head), expected) > 1e-2  # the adapter matters
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*(missing|unexpected).*")
        model = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    assert _max_error(_hf_outputs(model, head), expected) < 1e-4
    # PEFT adapted exactly the modules the file holds (target_modules selects no more).
    from safetensors.numpy import load_file

    adapted = {n.rsplit(".", 1)[0] for n, _ in model.named_modules() if n.endswith(".lora_A")}
    stored = {k.rsplit(".", 2)[0] for k in load_file(tmp_path / "adapter" / "adapter_model.safetensors")}
    assert adapted == stored, config["target_modules"]
    # And back into a fresh backbone of ours: the same outputs.
    fresh = backbones.Backbone.from_preset(directory)
    fresh.load_lora_weights(tmp_path / "adapter")
    assert _max_error(_our_outputs(fresh, head), expected) < 1e-5
    if case == "bert_query_value_ffn":  # ffn's output.dense, not attention.output.dense
        assert not any("attention.output" in m for m in adapted)


def test_our_adapter_loads_onto_our_transformers_export(checkpoints, tmp_path):
    import peft
    import tasks

    directory, head = checkpoints["llama"]
    ours = backbones.Backbone.from_preset(directory)
    tasks.CausalLM(ours, sequence_length=8).export_to_transformers(tmp_path / "export")
    ours.enable_lora(2)
    randomize_lora(ours)
    ours.save_lora_weights(tmp_path / "adapter")
    model = peft.PeftModel.from_pretrained(_hf(tmp_path / "export", head), tmp_path / "adapter").eval()
    assert _max_error(_hf_outputs(model, head), _our_outputs(ours, head)) < 1e-4


@pytest.fixture(scope="module")
def llama_adapter(checkpoints, tmp_path_factory):
    directory, head = checkpoints["llama"]
    out = tmp_path_factory.mktemp("adapter") / "peft"
    make_peft_adapter(directory, head, ["q_proj", "v_proj"], {}, out)
    return out


@pytest.mark.parametrize("change, match", [
    ({"use_dora": True}, "use_dora=True is not supported: DoRA"),
    ({"bias": "all"}, "bias='all' is not supported"),
    ({"modules_to_save": ["score"]}, r"modules_to_save=\['score'\] is not supported"),
    ({"peft_type": "IA3"}, "peft_type='IA3' is not supported"),
    ({"lora_bias": True}, "lora_bias=True is not supported"),
    # LoRA variants with plain-looking tensors: loaded as plain LoRA, they would be silently wrong.
    ({"alora_invocation_tokens": [5, 6]}, r"alora_invocation_tokens=\[5, 6\] is not supported: activated LoRA"),
    ({"kasa_config": {"use_kasa": True}}, "kasa_config=.* is not supported: KaSA"),
    ({"trainable_token_indices": [3]}, r"trainable_token_indices=\[3\] is not supported"),
])
def test_unsupported_peft_settings_are_refused(change, match, checkpoints, llama_adapter, tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(llama_adapter, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, **change}))
    ours = backbones.Backbone.from_preset(checkpoints["llama"][0])
    with pytest.raises(LoRAError, match=match):
        ours.load_lora_weights(adapter)
    assert ours.lora_spec is None


def test_unknown_module_and_mismatched_settings_are_refused(checkpoints, llama_adapter, tmp_path):
    from safetensors.numpy import load_file, save_file

    adapter = tmp_path / "adapter"
    shutil.copytree(llama_adapter, adapter)
    tensors = load_file(adapter / "adapter_model.safetensors")
    tensors["base_model.model.model.embed_tokens.lora_embedding_A"] = np.zeros((4, 64), "float32")
    save_file(tensors, adapter / "adapter_model.safetensors")
    ours = backbones.Backbone.from_preset(checkpoints["llama"][0])
    with pytest.raises(LoRAError, match="embed_tokens.lora_embedding_A"):
        ours.load_lora_weights(adapter)
    ours.enable_lora(2)  # rank 2, the adapter is rank 4
    with pytest.raises(LoRAError, match="rank=4.*this backbone has rank=2"):
        ours.load_lora_weights(llama_adapter)


def test_a_lora_layer_without_a_peft_module_is_refused_not_dropped(monkeypatch, tmp_path):
    from backbones.formats import peft as peft_format

    ours = backbones.Backbone.from_preset("llama_tiny_en")
    ours.enable_lora(2)
    converter, modules = peft_format._modules(ours)
    lost = next(m for m in modules if m.endswith("v_proj"))
    monkeypatch.setattr(peft_format, "_modules", lambda backbone: (converter, {
        m: e for m, e in modules.items() if m != lost}))
    with pytest.raises(LoRAError, match="value.*no transformers module.*format='backbone_lab'"):
        ours.save_lora_weights(tmp_path / "adapter", format="peft")
    assert not (tmp_path / "adapter").exists()
