import keras
import numpy as np

import tasks
from tasks import task_presets
from tests.tasks.toy_data import corpus, sentiment


def snapshot(weights):
    return {id(w): np.array(keras.ops.convert_to_numpy(w)) for w in weights}


def check_lora_training(task, data):
    task.backbone.enable_lora(4)
    lora = [w for w in task.backbone.weights if "lora_kernel" in w.name]
    head = list(task_presets.head_variables(task).values())
    assert {id(w) for w in task.trainable_weights} == {id(w) for w in lora + head}
    frozen = [w for w in task.weights if id(w) not in {id(v) for v in lora + head}]
    before_frozen, before_trained = snapshot(frozen), snapshot(lora + head)
    task.compile()  # LoRA is on: default learning rate 2e-4
    assert float(task.optimizer.learning_rate) == np.float32(2e-4)
    task.fit(*data, batch_size=8, epochs=1, steps_per_epoch=10, verbose=0)
    for w in frozen:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), before_frozen[id(w)], err_msg=w.path)
    for w in lora + head:
        assert not np.array_equal(keras.ops.convert_to_numpy(w), before_trained[id(w)]), w.path
    return lora, head, frozen


def test_lora_classifier_trains_only_lora_and_head():
    clf = tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=3, sequence_length=16)
    lora, head, frozen = check_lora_training(clf, sentiment(80))
    assert len(lora) == 2 * 2 * 2 and len(head) == 2  # 2 layers x (query, value) x (A, B); kernel, bias
    assert any("bias" in w.path for w in frozen)  # LoRA'd layers' biases stay frozen too


def test_lora_causal_lm_trains_only_lora():
    lm = tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=12)
    before = lm.generate("the movie", max_length=10)  # traced before LoRA: must not be reused after
    lora, head, _ = check_lora_training(lm, (corpus(80),))
    assert head == []  # the tied head is the (frozen) token embedding
    key_count = len(lm._generate_functions)
    lm.generate("the movie", max_length=10)
    assert len(lm._generate_functions) == key_count + 1 and isinstance(before, str)
