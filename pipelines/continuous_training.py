r"""The continuous-training pipeline: wiring only.

ingest -> statistics -> validate_data -> train -> evaluate -> validate_model -> infra_validate -> push
       \-> materialize (the run's features into the online store, before push)

kfp.local cannot run `dsl.If`, so "push only if blessed" is the pusher's own check, and
"stop on schema skew" is validate_data failing: train takes validate_data's schema and
anomalies as inputs (and refuses any anomalies itself), so nothing after it runs.

On a cluster every step mounts the home volume (the PersistentVolumeClaim named by
`home_volume`, in the namespace the run's pods run in) at HOME_MOUNT, where data_root and
model_repository point; kfp.local ignores the mount and uses the paths as they are.
"""

from kfp import dsl, kubernetes

from components.evaluate.component import evaluate
from components.infra_validate.component import infra_validate
from components.ingest.component import ingest
from components.materialize.component import materialize
from components.push.component import push
from components.statistics.component import statistics
from components.train.component import train
from components.validate_data.component import validate_data
from components.validate_model.component import validate_model

PIPELINE_NAME = "continuous-training"
HOME_MOUNT = "/var/lib/ct"
# S3/MinIO settings for the steps that read the feature tables: an optional Secret holding
# an AWS `config` file (endpoint_url, region) and a `credentials` file.
OBJECT_STORAGE_SECRET = "ct-object-storage"
OBJECT_STORAGE_MOUNT = "/var/run/secrets/ct-object-storage"


@dsl.pipeline(name=PIPELINE_NAME, description="Retrain, validate and push a model when new data arrives.")
def continuous_training(
    data_root: str,
    metadata_connection: str,
    model_repository: str,
    dataset: str = "flights",
    run_id: str = "",
    trigger: str = "manual",
    reason: str = "",
    window_spans: int = 1,
    eval_percent: int = 20,
    statistics_engine: str = "memory",
    beam_pipeline_args: str = "",
    categorical_drift_threshold: float = 0.1,
    numeric_drift_threshold: float = 0.1,
    epochs: int = 5,
    batch_size: int = 256,
    learning_rate: float = 0.005,
    hidden_units: str = "64,32",
    seed: int = 42,
    min_auc: float = 0.65,
    max_auc_drop: float = 0.01,
    max_slice_auc_drop: float = 0.05,
    min_slice_examples: int = 200,
    home_volume: str = "ct-home",
    feature_repo: str = HOME_MOUNT + "/feature_repo",
    feature_redis: str = "",
    feature_tables: str = "",
):
    # An empty run_id (a recurring run) falls back to KFP's job id inside each step.
    common = {"metadata_connection": metadata_connection, "run_id": run_id, "job_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER}
    # The feature tables: feature_tables (a folder or s3:// URI) or, empty, data_root/features.
    examples = ingest(
        data_root=data_root,
        feature_tables=feature_tables,
        dataset=dataset,
        window_spans=window_spans,
        eval_percent=eval_percent,
        trigger=trigger,
        reason=reason,
        **common,
    )
    # The online store: Redis at feature_redis (host:port) in a cluster, SQLite in feature_repo without one.
    features = materialize(
        data_root=data_root,
        feature_tables=feature_tables,
        dataset=dataset,
        feature_repo=feature_repo,
        feature_redis=feature_redis,
        train_examples=examples.outputs["train_examples"],
        **common,
    )
    stats = statistics(
        dataset=dataset,
        engine=statistics_engine,
        beam_pipeline_args=beam_pipeline_args,
        train_examples=examples.outputs["train_examples"],
        eval_examples=examples.outputs["eval_examples"],
        **common,
    )
    validation = validate_data(
        dataset=dataset,
        categorical_drift_threshold=categorical_drift_threshold,
        numeric_drift_threshold=numeric_drift_threshold,
        train_statistics=stats.outputs["train_statistics"],
        eval_statistics=stats.outputs["eval_statistics"],
        **common,
    )
    trained = train(
        dataset=dataset,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        hidden_units=hidden_units,
        seed=seed,
        train_examples=examples.outputs["train_examples"],
        schema=validation.outputs["schema"],
        anomalies=validation.outputs["anomalies"],
        **common,
    )
    evaluation = evaluate(
        dataset=dataset,
        min_slice_examples=min_slice_examples,
        model=trained.outputs["model"],
        eval_examples=examples.outputs["eval_examples"],
        **common,
    )
    blessing = validate_model(
        min_auc=min_auc,
        max_auc_drop=max_auc_drop,
        max_slice_auc_drop=max_slice_auc_drop,
        min_slice_examples=min_slice_examples,
        evaluation=evaluation.outputs["evaluation"],
        **common,
    )
    infra = infra_validate(
        dataset=dataset, model=trained.outputs["model"], eval_examples=examples.outputs["eval_examples"], **common
    )
    infra.after(blessing)
    pushed = push(
        dataset=dataset,
        model_repository=model_repository,
        model=trained.outputs["model"],
        blessing=blessing.outputs["blessing"],
        infra_blessing=infra.outputs["infra_blessing"],
        **common,
    )
    pushed.after(features)  # a pushed model finds its features online
    for task in (examples, features, stats, validation, trained, evaluation, blessing, infra, pushed):
        kubernetes.mount_pvc(task, pvc_name=home_volume, mount_path=HOME_MOUNT)
    for task in (examples, features):  # they read the feature tables, maybe from object storage
        kubernetes.use_secret_as_volume(
            task, secret_name=OBJECT_STORAGE_SECRET, mount_path=OBJECT_STORAGE_MOUNT, optional=True
        )
        task.set_env_variable("AWS_CONFIG_FILE", f"{OBJECT_STORAGE_MOUNT}/config")
        task.set_env_variable("AWS_SHARED_CREDENTIALS_FILE", f"{OBJECT_STORAGE_MOUNT}/credentials")
