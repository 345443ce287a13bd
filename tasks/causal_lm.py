"""`CausalLM`: next-token prediction with a tied LM head, and text generation."""


import keras
import numpy as np
from keras import ops

from tasks import data, generation, losses, samplers
from tasks.errors import TaskConfigError, TaskInputError
from tasks.task import Task, build_preprocessor, task_inputs


class LMHead(keras.layers.Layer):
    """Float32 logits from hidden states: `backbone.compute_logits` (tied to
    the token embedding unless the family overrides it: untied heads,
    soft-capping). Holds no weights of its own, and no tracked reference to
    the backbone."""

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self._compute = backbone.compute_logits
        self._vocabulary_size = backbone.token_embedding.input_dim

    def call(self, hidden):
        return ops.cast(self._compute(hidden), "float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self._vocabulary_size,)


class PackedDecoder(keras.layers.Layer):
    """The backbone on packed rows: `backbone.call_packed(token_ids,
    segment_ids * padding_mask)`. Holds no tracked reference to the backbone
    (the task tracks it), like `LMHead`."""

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self._call = backbone.call_packed
        self._hidden_dim = backbone.output.shape[-1]

    def call(self, token_ids, padding_mask, segment_ids, training=None):
        return self._call(token_ids, segment_ids * ops.cast(padding_mask, "int32"), training=training)

    def compute_output_shape(self, token_ids_shape, *args):
        return tuple(token_ids_shape) + (self._hidden_dim,)


class Perplexity(keras.metrics.MeanMetricWrapper):
    """exp(mean cross-entropy) over the weighted (real) tokens seen so far.

    The cross-entropy is the loss's own forward (`losses.sparse_cross_entropy`),
    so under XLA the metric shares the loss's pass over the logits.
    """

    def __init__(self, name="perplexity", dtype=None):
        super().__init__(fn=losses.sparse_cross_entropy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}

    def result(self):
        return ops.exp(super().result())


class CausalLM(Task):
    """A decoder language model: backbone plus LM head, trained on raw text.

    Training packs each text as `[BOS] tokens [EOS]` and predicts every next
    token; the loss is the mean cross-entropy over real tokens only
    (padding has sample weight 0). `compile()` defaults: AdamW, that masked
    loss, token accuracy and perplexity (weighted metrics). The logits come
    from `backbone.compute_logits(hidden)` (by default tied:
    `hidden @ backbone.token_embedding.embeddings^T`).

    Args:
        backbone: backbones.Backbone. A decoder (`is_encoder` False); generation
            needs its `init_cache` / `call_with_cache` (or `use_cache=False`).
        preprocessor: tasks.Preprocessor. Default: one from `backbone.tokenizer`.
        sequence_length: int. Training length when the preprocessor is built here.
        packing: bool. Train on packed rows: several texts per row, each
            attending only to itself with positions restarting at 0, so the
            loss equals the unpacked one on the same texts with less padding.
            `fit` on strings packs them (`Preprocessor.packed_causal_lm`); a
            token dict may carry `segment_ids`. Predicting, evaluating and
            generating are per text as without packing. A training choice,
            not saved in presets.
        name: str. Keras model name.

    Example:
    >>> import tasks
    >>> lm = tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=16)
    >>> lm.predict(["the movie"], verbose=0).shape
    (1, 16, 512)
    >>> text = lm.generate("the movie", max_length=8)
    >>> text.startswith("the movie")
    True
    """

    def __init__(self, backbone, preprocessor=None, sequence_length=128, packing=False, **kwargs):
        if backbone.is_encoder:
            raise TaskConfigError(
                f"CausalLM needs a decoder backbone; {type(backbone).__name__} is a bidirectional "
                "encoder (is_encoder=True). Use a GPT-2, Llama or Gemma preset."
            )
        if packing and not backbone.supports_packing:
            raise TaskConfigError(
                f"packing=True needs a backbone that takes packed rows (call_packed); "
                f"{type(backbone).__name__} does not. Train without packing (data.packing=false).")
        preprocessor = build_preprocessor(backbone, preprocessor, sequence_length)

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.packing = bool(packing)
        self.lm_head = LMHead(backbone, dtype=backbone.dtype_policy, name="lm_head")

        # === Functional model ===
        inputs = task_inputs(backbone)
        if self.packing:  # a graph of its own: the unpacked one builds no segment mask
            inputs["segment_ids"] = keras.Input(shape=(None,), dtype="int32", name="segment_ids")
            hidden = PackedDecoder(backbone, dtype=backbone.dtype_policy, name="packed_decoder")(
                inputs["token_ids"], inputs["padding_mask"], inputs["segment_ids"])
        else:
            hidden = backbone.sequence_output(backbone(inputs))
        logits = self.lm_head(hidden)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self._generate_functions = {}

    def fit(self, x=None, y=None, batch_size=None, sample_weight=None, **kwargs):
        """`Task.fit`; with `packing`, in-memory strings are packed first."""
        if self.packing and data.is_in_memory(x) and not data.is_token_dict(x):
            self._check_texts_only(y, sample_weight)
            (x, y, sample_weight), _ = self.preprocessor.packed_causal_lm(x)
        return super().fit(x, y, batch_size=batch_size, sample_weight=sample_weight, **kwargs)

    def predict(self, x, batch_size=None, **kwargs):
        """Float32 logits `(batch, length, vocabulary)`. A token dict is the
        model's input as given: logits at each of its positions, as
        transformers' `model(input_ids).logits` has them (not shifted as
        training shifts a token dict without targets). Strings are packed as
        for training (`preprocessor.causal_lm`)."""
        if not data.is_token_dict(x):
            return super().predict(x, batch_size=batch_size, **kwargs)
        inputs = self._with_segments(self._pack_inputs(x), x)
        with data.translate_errors():
            return keras.Model.predict(self, inputs, batch_size=batch_size, **kwargs)

    def _check_texts_only(self, y, sample_weight):
        if y is not None or sample_weight is not None:
            raise TaskInputError(
                "CausalLM learns from the texts themselves: pass raw strings without y "
                "or sample_weight (or token dicts with your own y and sample_weight)."
            )

    def _preprocess(self, x, y=None, sample_weight=None):
        if not data.is_token_dict(x):
            self._check_texts_only(y, sample_weight)
            inputs, targets, weights = self.preprocessor.causal_lm(x)
            return self._with_segments(inputs, x), targets, weights
        inputs = self._with_segments(self._pack_inputs(x), x)
        if y is not None:
            out = (inputs, np.asarray(y, "int32"))
            return out if sample_weight is None else out + (np.asarray(sample_weight, "float32"),)
        # Token ids without targets: predict each next token of the sequence
        # (of the same packed example: none across a segment boundary).
        ids, mask = inputs["token_ids"], inputs["padding_mask"]
        shifted = {k: v[:, :-1] for k, v in inputs.items()}
        weight = mask[:, 1:].astype("float32")
        if self.packing:
            weight *= inputs["segment_ids"][:, 1:] == inputs["segment_ids"][:, :-1]
        return shifted, ids[:, 1:], weight

    def _with_segments(self, inputs, x):
        """Packing: `segment_ids` from a token dict, else one example per row."""
        if not self.packing:
            return inputs
        given = x.get("segment_ids") if data.is_token_dict(x) else None
        segments = inputs["padding_mask"] if given is None else np.asarray(given, "int32")
        return {**inputs, "segment_ids": segments}

    def _transformers_head(self):
        return "causal_lm", None

    def _default_loss(self):
        # Divide by the summed weights (real tokens), not by every position.
        return losses.SparseCrossEntropy(reduction="mean_with_sample_weight")

    def _default_metrics(self):
        return None, [keras.metrics.SparseCategoricalAccuracy("accuracy"), Perplexity()]

    def generate(self, prompts, max_length=None, sampler="greedy", temperature=None, seed=None,
                 stop_token_ids="auto", use_cache=True, jit_compile=True, chat=False):
        """Continues each prompt, one cached step per new token.

        Strings are packed as `[BOS] prompt`, right-padded (each prompt at
        position 0, so a prompt's result does not depend on the others), and
        returned as prompt + continuation, special tokens removed. A dict
        `{"token_ids", "padding_mask"}` of prompts (any padding) returns a dict of
        `(batch, max_length)` arrays whose mask covers prompt and generated
        tokens through the stop token. The loop is compiled (XLA on
        TensorFlow) once per batch size, `max_length` and sampler settings.

        With `chat=True` each prompt is a conversation (a list of
        `{"role", "content"}` messages, or a str for one user message),
        rendered with the tokenizer's chat template and its generation prompt
        (the template supplies its special tokens), and the result is the
        assistant's reply alone.

        Args:
            prompts: str, list / array of str, or a token dict; with `chat`,
                a conversation or a list of them.
            max_length: int. Total length, prompt included. Default: the
                preprocessor's sequence length.
            sampler: str or tasks.Sampler. `"greedy"`, `"random"`, `"top_k"`,
                `"top_p"` or a sampler object (for `k`, `p`).
            temperature: float. For a sampler given by name.
            seed: int. For a sampler given by name: fixes its noise.
            stop_token_ids: `"auto"` (the eos token), or ids; None or `()`
                generates to `max_length`.
            use_cache: bool. False recomputes the whole sequence each step
                (slow; for checking the cache).
            jit_compile: bool. Compile the loop with XLA (TensorFlow backend;
                other backends run it eagerly). False: a plain tf.function.
            chat: bool. Render prompts with the chat template (see above).

        Example:
        >>> import tasks
        >>> lm = tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=16)
        >>> out = lm.generate(["the movie", "a longer prompt"], max_length=16,
        ...                   sampler="top_k", temperature=0.8, seed=1)
        >>> len(out)
        2
        """
        if chat:
            single = isinstance(prompts, str) or (bool(prompts) and isinstance(prompts[0], dict))
            conversations = [prompts] if single else list(prompts)
            tokens_in = False
            rows = self.preprocessor.chat_prompts(conversations)
        else:
            single = isinstance(prompts, (str, bytes))
            tokens_in = data.is_token_dict(prompts)
            rows = _rows(prompts) if tokens_in else self.preprocessor.prompts(prompts)
        max_length = max_length or self.preprocessor.sequence_length
        self._check_lengths(rows, max_length)
        sampler = samplers.get(sampler, temperature, seed)
        stop = self._stop_ids(stop_token_ids)
        token_ids = np.full((len(rows), max_length), self.preprocessor.pad_id, "int32")
        prompt_mask = np.zeros((len(rows), max_length), bool)
        for i, row in enumerate(rows):
            token_ids[i, :len(row)], prompt_mask[i, :len(row)] = row, True
        lengths = [len(r) for r in rows]
        fn = self._generate_function(sampler, stop, use_cache, jit_compile)
        out, end = fn(token_ids, prompt_mask, sampler.noise(*token_ids.shape), np.int32(min(lengths)))
        out = np.asarray(ops.convert_to_numpy(out))
        mask = generation.output_mask(out, lengths, int(ops.convert_to_numpy(end)), stop)
        out = np.where(mask.astype(bool), out, self.preprocessor.pad_id).astype("int32")
        if tokens_in:
            return {"token_ids": out, "padding_mask": mask}
        start = [len(r) if chat else 0 for r in rows]  # a chat reply without its rendered prompt
        texts = self.preprocessor.tokenizer.detokenize(
            [row[s:][m[s:].astype(bool)] for row, m, s in zip(out, mask, start)])
        return texts[0] if single else texts

    def _generate_function(self, sampler, stop, use_cache, jit_compile):
        if use_cache and not self.backbone.supports_cache:
            raise TaskConfigError(
                f"{type(self.backbone).__name__} has no init_cache/call_with_cache, so generation "
                "cannot use a key/value cache. Pass use_cache=False (one full pass per token)."
            )
        # Rebuilt when the layers change (LoRA enabled after a first generate).
        key = (sampler.cache_key(), stop, use_cache, jit_compile, self.backbone.lora_spec, len(self.weights))
        if key not in self._generate_functions:
            self._generate_functions[key] = generation.make_generate_function(
                self.backbone, self.lm_head, sampler, stop, self.preprocessor.pad_id, use_cache, jit_compile)
        return self._generate_functions[key]

    def _stop_ids(self, stop_token_ids):
        if isinstance(stop_token_ids, str) and stop_token_ids == "auto":
            eos = self.preprocessor.eos_id
            return () if eos is None else (eos,)
        if stop_token_ids is None:
            return ()
        if isinstance(stop_token_ids, (int, np.integer)):
            stop_token_ids = [stop_token_ids]
        return tuple(int(t) for t in stop_token_ids)

    def _check_lengths(self, rows, max_length):
        limit = self.backbone.max_sequence_length
        if limit is not None and max_length > limit:
            raise TaskInputError(
                f"max_length={max_length} exceeds the backbone's max_sequence_length={limit} "
                "(its number of positions). Lower max_length."
            )
        for i, row in enumerate(rows):
            if not row:
                raise TaskInputError(
                    f"Prompt {i} is empty and the tokenizer has no bos token to start from: "
                    "give at least one token."
                )
            if len(row) >= max_length:
                raise TaskInputError(
                    f"Prompt {i} has {len(row)} tokens (with bos), which leaves no room to "
                    f"generate within max_length={max_length}. Raise max_length or shorten it."
                )


def _rows(prompts):
    """Each prompt's real tokens (where its padding mask is 1), whatever the padding side."""
    ids = np.asarray(prompts["token_ids"])
    mask = np.asarray(prompts.get("padding_mask", np.ones_like(ids)))
    return [[int(t) for t, m in zip(r, mr) if m] for r, mr in zip(np.atleast_2d(ids), np.atleast_2d(mask))]
