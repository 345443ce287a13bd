"""A run's model as an MLflow 3 model: a LoggedModel, loadable with `mlflow.pyfunc`.

MLflow 3 keeps a model's files under the model, not the run
(`<experiment>/models/<model id>/artifacts/`), and resolves
`runs:/<run id>/model` to the run's model named `model`. So the run's model
(`lab/artifacts.py`: `model/` = base record + adapter + head for a LoRA run,
`preset/` for a full fine-tune or `tracking.save=merged`) is written once,
straight into that directory, beside the MLmodel file and the environment
files that make it a pyfunc model:

    MLmodel  requirements.txt  python_env.yaml  conda.yaml  input_example.json ...
    model/   (and/or preset/)

The pyfunc flavour names this module as its loader (`loader_module`): no
pickle, no code copied into the model; loading needs this package installed,
which the requirements pin to the running version. A LoRA model's base comes
from its pinned handle (Hugging Face cache, ...) as `load_run_model` finds it.

    mlflow.pyfunc.load_model("runs:/<run id>/model").predict(["A fine film."])
    #   classifier: DataFrame with label, probability, probabilities
    #   causal LM:  DataFrame with generated_text; params max_length, sampler, temperature, seed
    #   chat model (trained on data.format=chat): each text is one user message, rendered
    #   with the model's chat template; generated_text is the assistant's reply

The LoggedModel carries the run's params and its final metrics, and the run
lists it among its outputs.
"""

import importlib.metadata
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from backbones.chat_template import normalize_messages
from lab import artifacts, registry
from lab.distribution import is_chief

MODEL_NAME = "model"  # the LoggedModel's name: `runs:/<run id>/model` finds it
PACKAGE = "backbone-lab"  # pyproject's [project] name
EXAMPLE_TEXTS = ["The movie was great.", "A dull and slow story."]


def requirements():
    """Pip requirements of a logged model: this package (and MLflow) pinned to
    the running versions; the package brings the rest.

    >>> requirements()[0].startswith("backbone-lab==")
    True
    """
    return [f"{p}=={importlib.metadata.version(p)}" for p in (PACKAGE, "mlflow")]


def generation_defaults(task):
    """Default generation settings of a causal LM's pyfunc (its signature params)."""
    return {"max_length": int(task.preprocessor.sequence_length), "sampler": "greedy", "temperature": 1.0,
            "seed": 0}


def input_examples(task, split, count=2):
    """Up to `count` texts of `split` as the model's pyfunc takes them: a
    classifier's texts as they are; for a causal LM the prompt part (an
    instruction's rendered prompt, a conversation's first user message, a
    text's first half), cut to words that leave room to generate within the
    default `max_length`.

    >>> import tasks
    >>> from lab.data import Split
    >>> lm = tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=64)
    >>> input_examples(lm, Split(["one two three four five six seven eight nine ten"]))
    ['one two three four five']
    >>> lm = tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=4)
    >>> input_examples(lm, Split(["one two three four five six seven eight nine ten"]))
    ['one']
    """
    import tasks

    texts = []
    for item in list(split.texts)[:count]:
        if split.format == "instruction":
            item = item["prompt"]
        elif split.format == "chat":
            item = next((m["content"] for m in normalize_messages(item) if m["role"] == "user"), "")
        elif isinstance(task, tasks.CausalLM):
            words = str(item).split()
            item = " ".join(words[:max(1, len(words) // 2)])
        texts.append(str(item))
    if not isinstance(task, tasks.CausalLM):
        return texts
    chat = split.format == "chat"
    room = generation_defaults(task)["max_length"] // 2  # the example prompt takes at most half
    fitted = []
    for text in texts:
        words = text.split()
        while len(words) > 1 and _prompt_length(task, " ".join(words), chat) > room:
            words = words[:len(words) // 2] if len(words) > 16 else words[:-1]
        fitted.append(" ".join(words))
    return fitted


def _prompt_length(task, text, chat):
    if chat:
        return len(task.preprocessor.chat_prompts([[{"role": "user", "content": text}]])[0])
    return len(task.preprocessor.prompts([text])[0])


def log_model(task, base, cfg, label_names=None, examples=(), chat=False):
    """Logs the run's model once as an MLflow LoggedModel of the active run,
    registers it if `tracking.register` is set (a single run; a sweep
    registers its best job instead, see `lab.registry`).

    Args:
        task: tasks.Task. The trained task.
        base: artifacts.BaseRecord or None (the backbone's weights trained).
        cfg: DictConfig. The run's config (`tracking.save`, `register`, `alias`).
        label_names: list or None. Label id -> original label (None: the ids).
        examples: list of str. Texts for the input example (`input_examples`;
            default: two fixed ones).
        chat: bool. A causal LM trained on conversations: its pyfunc renders each
            text as a user message with the chat template and returns the reply.

    Returns: dict. Saved part name (`model`, `preset`) -> (URI, bytes), as
    `artifacts.log_run_model` returns, for the run's summary.
    """
    import mlflow

    if cfg.tracking.save == "none":
        return {}
    # Every worker: under multi_worker, predict is a collective step, which the chief alone would
    # wait on after the others had left (the run failed with "task:1 ... stopped").
    model = TextModel(task, label_names, chat)
    examples, signature = _signature(model, list(examples)[:2])
    if not is_chief():  # one record per run: the chief's
        return {}
    run = mlflow.active_run()
    client = mlflow.MlflowClient()
    run_data = client.get_run(run.info.run_id).data
    logged = mlflow.initialize_logged_model(
        name=MODEL_NAME, source_run_id=run.info.run_id, model_type=type(task).__name__,
        params=dict(run_data.params))
    local = artifacts.local_artifact_dir(logged.artifact_location)
    try:
        with tempfile.TemporaryDirectory(prefix="run-model-") as tmp:
            directory = local if local is not None else Path(tmp)
            saved = artifacts.save_run_model(task, base, cfg.tracking.save, directory,
                                                cfg.tracking.export)
            _write_pyfunc_files(model, directory, logged, run.info.run_id, examples, signature)
            if local is None:  # a remote artifact store: upload, then the temporary copy goes
                client.log_model_artifacts(logged.model_id, str(directory))
            out = {name: (f"{logged.artifact_location.rstrip('/')}/{name}", artifacts.dir_bytes(path))
                   for name, path in saved.items()}
    except BaseException:
        mlflow.finalize_logged_model(logged.model_id, "FAILED")
        raise
    final = {k: v for k, v in run_data.metrics.items() if k.startswith("final_")}
    if final:
        mlflow.log_metrics(final, model_id=logged.model_id)  # the model page shows its validation result
    client.log_outputs(run.info.run_id, [mlflow.entities.LoggedModelOutput(logged.model_id, step=0)])
    mlflow.finalize_logged_model(logged.model_id, "READY")
    if cfg.tracking.register and "mlflow.parentRunId" not in run_data.tags:
        version = registry.register(logged.model_id, cfg.tracking.register, cfg.tracking.alias)
        print(f"Registered model {cfg.tracking.register!r} version {version.version}"
              + (f" (alias {cfg.tracking.alias!r})" if cfg.tracking.alias else "")
              + f": mlflow models serve -m models:/{cfg.tracking.register}/{version.version} --env-manager local")
    return out


def _signature(model, examples):
    """(examples, MLflow signature): its outputs are the trained task's own predictions on them."""
    import mlflow

    examples = examples or EXAMPLE_TEXTS
    params = generation_defaults(model.task) if model.generates else None
    # A column of strings without a name: a list of texts and any one-column DataFrame both pass.
    return examples, mlflow.models.infer_signature(examples, model.predict(examples, params), params)


def _write_pyfunc_files(model, directory, logged, run_id, examples, signature):
    """MLmodel, environment files, signature and input example of the TextModel
    `model`, beside the model files already in `directory`."""
    import mlflow

    metadata = {"task": type(model.task).__name__, "label_names": model.label_names, "chat": model.chat}
    quiet = logging.getLogger("mlflow.pyfunc")  # "Validating input example against model signature"
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix="pyfunc-") as tmp:
            # save_model refuses a non-empty directory: write its files aside, then move them in.
            mlflow.pyfunc.save_model(
                Path(tmp) / "m", loader_module=__name__, signature=signature, input_example=examples,
                pip_requirements=requirements(), metadata=metadata,
                mlflow_model=mlflow.models.Model(run_id=run_id, model_id=logged.model_id, model_uuid=logged.model_id))
            for path in (Path(tmp) / "m").iterdir():
                shutil.move(str(path), str(Path(directory) / path.name))
    finally:
        quiet.setLevel(level)
    mlmodel = mlflow.models.Model.load(str(Path(directory) / "MLmodel"))
    mlmodel.model_size_bytes = artifacts.dir_bytes(directory)
    mlmodel.save(str(Path(directory) / "MLmodel"))


# -- loading (pyfunc's loader_module protocol) --------------------------------
def _load_pyfunc(path, model_config=None):
    """Called by `mlflow.pyfunc.load_model` with the model's directory."""
    import mlflow

    metadata = mlflow.models.Model.load(str(Path(path) / "MLmodel")).metadata or {}
    return TextModel(artifacts.load_run_model(path), metadata.get("label_names"), bool(metadata.get("chat")))


class TextModel:
    """The pyfunc face of a task: texts in, labels or generated text out.

    Args:
        task: tasks.Task. A `TextClassifier` or a `CausalLM`.
        label_names: list or None. A classifier's label names by id (None: "0", "1", ...).
        chat: bool. A causal LM's texts are user messages, rendered with its chat
            template; the output is the assistant's reply alone.

    Example:
    >>> import tasks
    >>> from lab.mlflow_model import TextModel
    >>> model = TextModel(tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=2), ["neg", "pos"])
    >>> answer = model.predict(["A fine film."])
    >>> list(answer.columns), answer["label"][0] in ("neg", "pos")
    (['label', 'probability', 'probabilities'], True)
    """

    def __init__(self, task, label_names=None, chat=False):
        import tasks

        self.task = task
        self.generates = isinstance(task, tasks.CausalLM)
        self.chat = bool(chat and self.generates)
        self.label_names = None
        if not self.generates:
            self.label_names = [str(n) for n in (label_names or range(task.num_classes))]

    def predict(self, model_input, params=None):
        """`model_input`: a DataFrame (its `text` column, else its first), a list of
        str or a str. Returns a DataFrame, one row per text."""
        import pandas as pd

        texts = _texts(model_input)
        if self.generates:
            settings = {**generation_defaults(self.task), **(params or {})}
            prompts = [[{"role": "user", "content": t}] for t in texts] if self.chat else texts
            generated = self.task.generate(prompts, max_length=int(settings["max_length"]), sampler=settings["sampler"],
                                           temperature=float(settings["temperature"]), seed=int(settings["seed"]),
                                           chat=self.chat)
            return pd.DataFrame({"generated_text": generated})
        logits = np.asarray(self.task.predict(texts, verbose=0), "float64")
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        best = probabilities.argmax(-1)
        return pd.DataFrame({"label": [self.label_names[i] for i in best],
                             "probability": probabilities[np.arange(len(best)), best],
                             "probabilities": list(probabilities)})


def _texts(model_input):
    import pandas as pd

    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(t) for t in model_input[column]]
    if isinstance(model_input, dict) and "text" in model_input:
        return [str(t) for t in np.atleast_1d(model_input["text"])]
    return [str(t) for t in model_input]
