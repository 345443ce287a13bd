"""Times converting a ~100M-parameter transformers checkpoint of each family.

    python scripts/bench_conversion.py [--families gpt2 bert llama gemma] [--repeats 3]

Needs the test extra (transformers, torch). For each family: a randomly
initialised transformers model of about 100M parameters is saved with
`save_pretrained` (safetensors), then `Backbone.from_preset(dir)` is timed in
a fresh process (imports excluded), `--repeats` times; the median is reported
with the parameter count and the peak resident memory of the loading process.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CONFIGS = {  # each about 100M parameters
    "gpt2": ("GPT2Model", "GPT2Config", dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024)),
    "bert": ("BertModel", "BertConfig", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                             intermediate_size=3072, vocab_size=30522)),
    "llama": ("LlamaForCausalLM", "LlamaConfig", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                                      num_key_value_heads=4, intermediate_size=2048,
                                                      vocab_size=32000, tie_word_embeddings=True)),
    "gemma": ("GemmaForCausalLM", "GemmaConfig", dict(hidden_size=768, num_hidden_layers=10, num_attention_heads=12,
                                                      num_key_value_heads=1, head_dim=64, intermediate_size=3072,
                                                      vocab_size=32000)),
}

LOAD = """
import json, resource, sys, time
import backbones
start = time.perf_counter()
model = backbones.Backbone.from_preset(sys.argv[1])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "params": model.count_params(),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def save_checkpoint(family, directory):
    import torch
    import transformers

    model_name, config_name, kwargs = CONFIGS[family]
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(getattr(transformers, config_name)(**kwargs))
    model.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(CONFIGS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| family | transformers params | our params | from_preset (median s) | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for family in args.families:
        with tempfile.TemporaryDirectory() as tmp:
            hf_params = save_checkpoint(family, tmp)
            runs = [json.loads(subprocess.run([sys.executable, "-c", LOAD, tmp], check=True, capture_output=True,
                                              text=True).stdout.strip().splitlines()[-1])
                    for _ in range(args.repeats)]
        seconds = statistics.median(r["seconds"] for r in runs)
        rss = statistics.median(r["peak_rss_mb"] for r in runs)
        print(f"| {family} | {hf_params / 1e6:.1f}M | {runs[0]['params'] / 1e6:.1f}M | {seconds:.2f} | {rss:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
