"""The hooks tasks rely on, declared on `Backbone`, on every registered family."""

import numpy as np
import pytest

from backbones import Backbone
from tests.helpers import bundled_presets


@pytest.mark.parametrize("preset", bundled_presets())
def test_task_hooks(preset):
    model = Backbone.from_preset(preset)
    x = {name: np.zeros((2, 5), "int32") if name == "segment_ids" else np.ones((2, 5), "int32")
         for name in model.input_names}
    assert set(model.input_names) >= {"token_ids", "padding_mask"}
    outputs = model(x)
    hidden = model.sequence_output(outputs)
    assert tuple(hidden.shape[:2]) == (2, 5)
    pooled = model.pooled_output(outputs)
    if model.is_encoder:
        assert tuple(pooled.shape) == (2, hidden.shape[-1]) and "segment_ids" in model.input_names
        assert not model.supports_cache
        with pytest.raises(NotImplementedError, match="encoder"):
            model.compute_logits(hidden)
        with pytest.raises(NotImplementedError, match="use_cache=False"):
            model.init_cache(2, 8)
    else:
        assert pooled is None and model.supports_cache
        assert model.compute_logits(hidden).shape[-1] == model.token_embedding.input_dim
        cache = model.init_cache(2, 8)
        step, _ = model.call_with_cache(x["token_ids"], np.ones((2, 8), "int32"), cache, 0)
        np.testing.assert_allclose(np.asarray(step, "float32"), np.asarray(hidden, "float32"), atol=1e-5)
