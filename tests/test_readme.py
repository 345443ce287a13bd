"""The README's two setup commands stay true: CI runs the test one verbatim,
and the main one runs train.py on the defaults."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_has_the_two_setup_commands():
    main, test = commands()
    assert main == "pip install -c constraints.txt -e . && python train.py"
    assert test == 'pip install -c constraints.txt -e ".[test]" && python -m pytest -q'


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test = commands()[1].replace("pip install ", "pip install -q ")
    assert test in ci


def test_readme_names_the_model_a_decoder_peft_adapter_loads_onto(tmp_path):
    """PEFT builds a `CAUSAL_LM` adapter's model with `prepare_inputs_for_generation`, which only
    `*ForCausalLM` has: the README must say so, not leave `hf_model` to be the bare AutoModel above it."""
    import json

    import backbones

    backbone = backbones.Backbone.from_preset("gpt2_tiny_en")
    backbone.enable_lora(2)
    backbone.save_lora_weights(tmp_path / "adapter", format="peft")
    task_type = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["task_type"]
    readme = (ROOT / "README.md").read_text()
    assert task_type == "CAUSAL_LM" and 'AutoModelForCausalLM.from_pretrained("out/hf")' in readme
