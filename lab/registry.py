"""The MLflow Model Registry: a run's or a sweep's best model as a registered version.

`tracking.register=NAME` registers the run's logged model (`lab/mlflow_model.py`)
as a new version of NAME, in the tracking store (sqlite or a server alike);
`tracking.alias=champion` points that alias at it. In a sweep (`-m`), the jobs
do not register: the sweep registers its best job by `task.metric` /
`task.metric_mode` when it ends, tagging the version with the sweep's parent
run id. Then:

    mlflow models serve -m models:/NAME@champion --env-manager local
"""

SWEEP_TAG = "sweep.parent_run_id"


def register(model_id, name, alias=None, tags=None):
    """Registers the LoggedModel `model_id` as a new version of `name`.

    Args:
        model_id: str. A LoggedModel id (`m-...`).
        name: str. The registered model's name (created if new).
        alias: str or None. An alias to move to this version.
        tags: dict. Tags of the version.

    Returns: mlflow.entities.model_registry.ModelVersion.
    """
    import mlflow

    client = mlflow.MlflowClient()
    try:  # the client's calls, not mlflow.register_model: they print nothing to stderr
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # A server checks that model_id names the source's model; the sqlite store finds it from the source.
    version = client.create_model_version(name, f"models:/{model_id}", tags=tags, model_id=model_id)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return version


def register_best(client, parent_run_id, best_run, name, alias=None, metric=None):
    """Registers the logged model of a sweep's best job, tagged with the sweep.

    Args:
        client: mlflow.MlflowClient. On the sweep's store.
        parent_run_id: str. The sweep's parent run.
        best_run: mlflow.entities.Run. The best child run.
        name, alias: as in `register`.
        metric: str. The metric the sweep optimised (recorded as a tag).

    Returns: the ModelVersion, or None when the best job logged no model
    (`tracking.save=none`).
    """
    outputs = best_run.outputs.model_outputs if best_run.outputs else []
    if not outputs:
        return None
    tags = {SWEEP_TAG: parent_run_id}
    if metric:
        tags[f"sweep.best_{metric}"] = str(best_run.data.metrics[f"final_{metric}"])
    version = register(outputs[-1].model_id, name, alias, tags)
    client.set_tag(parent_run_id, "registered_model", f"models:/{name}/{version.version}")
    return version
