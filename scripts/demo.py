"""A one-minute tour of the Backbone API on the bundled tiny GPT-2 (offline).

    python scripts/demo.py [--out DIR]

Loads `gpt2_tiny_en` (random weights), enables LoRA rank 4 on query/value,
takes a few gradient steps on a next-token objective, then saves the merged
preset (`save_to_preset`) and the adapter (`save_lora_weights`), and checks
both load back to the same outputs.
"""

import argparse
import tempfile
from pathlib import Path

import keras
import numpy as np

import backbones


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output directory (default: a temporary one)")
    out = Path(parser.parse_args().out or tempfile.mkdtemp(prefix="backbone-lab-demo-"))

    keras.utils.set_random_seed(0)
    backbone = backbones.Backbone.from_preset("gpt2_tiny_en")
    print(f"loaded {type(backbone).__name__}: {backbone.count_params():,} parameters")
    backbone.enable_lora(4)
    trainable = sum(int(np.prod(w.shape)) for w in backbone.trainable_weights)
    print(f"LoRA rank 4 on query/value: {trainable:,} trainable parameters")

    ids = np.array(backbone.tokenizer(["The movie was really great and i loved it."] * 8), "int32")
    inputs = {"token_ids": ids[:, :-1], "padding_mask": np.ones_like(ids[:, :-1])}
    head = keras.ops.transpose(backbone.token_embedding.embeddings)  # tied LM head
    optimizer = keras.optimizers.Adam(1e-2)
    import tensorflow as tf

    for step in range(20):
        with tf.GradientTape() as tape:
            logits = keras.ops.matmul(backbone(inputs), head)
            loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(ids[:, 1:], logits, from_logits=True))
        grads = tape.gradient(loss, backbone.trainable_weights)
        optimizer.apply(grads, backbone.trainable_weights)
        if step % 5 == 0 or step == 19:
            print(f"step {step:2d}  next-token loss {float(loss):.3f}")

    backbone.save_to_preset(out / "preset")
    backbone.save_lora_weights(out / "adapter.lora.safetensors")
    merged = backbones.Backbone.from_preset(out / "preset")
    adapted = backbones.Backbone.from_preset("gpt2_tiny_en")
    adapted.load_lora_weights(out / "adapter.lora.safetensors")
    reference = backbone(inputs).numpy()
    print(f"saved preset {out / 'preset'} (merged weights) and adapter {out / 'adapter.lora.safetensors'}")
    print(f"reloaded max abs difference: merged {np.abs(merged(inputs).numpy() - reference).max():.2e}, "
          f"adapter {np.abs(adapted(inputs).numpy() - reference).max():.2e}")


if __name__ == "__main__":
    main()
