r"""The continuous-training pipeline: wiring only.

ingest -> statistics -> validate_data -> data_gate -> train -> evaluate -> validate_model
       \-> materialize (the run's features into the online store)     -> infra_validate -> push

Every step runs inside an exit handler: `finalize` runs last on a cluster, whatever happened,
decides a run that ended undecided (a pod evicted or killed, a run cancelled) as failed, and
returns the run's decision as the pipeline's output (kfp.local runs it only after success).

kfp.local cannot run `dsl.If`, so "push only if blessed" is the pusher's own check, and
"stop on schema skew" is the data gate failing after validate_data has written its views
(a KFP step that fails uploads nothing, so validation itself must succeed to be seen);
train also takes the anomalies as an input and refuses any itself.

On a cluster every step mounts the home volume (the PersistentVolumeClaim named by
`home_volume`, in the namespace the run's pods run in) at HOME_MOUNT, where data_root,
model_repository, feature_repo and statistics_root point: everything a step reads from an
earlier run comes from there, never from KFP's artifact store, which gives a step only its
own inputs. kfp.local ignores the mount and uses the paths as they are.

Each step declares its CPU and memory (sized from what it used on the bundled data, with
headroom: `ct run` prints every step's peak), a timeout, and, for materialize, which writes
the online store (Redis), retries. A failure of the other steps is deterministic (ingest's
is most often bad data, which a retry would only read again), and push is never retried:
a second attempt could publish a second version.
"""

import dataclasses

from kfp import dsl, kubernetes

from components.common.home import CLUSTER_HOME, HOME_MOUNT
from components.data_gate.component import data_gate
from components.evaluate.component import evaluate
from components.finalize.component import finalize
from components.infra_validate.component import infra_validate
from components.ingest.component import ingest
from components.materialize.component import materialize
from components.push.component import push
from components.statistics.component import statistics
from components.train.component import train
from components.validate_data.component import validate_data
from components.validate_model.component import validate_model

PIPELINE_NAME = "continuous-training"
# The oldest KFP backend this spec runs on: its driver accepts kfp-kubernetes 1.5's fields
# (pvcNameParameter, secretNameParameter), which 2.4 rejects (2.5+); it applies requests,
# limits and activeDeadlineSeconds, and retries of tasks inside the exit handler (2.14+: before,
# only root tasks got theirs).
KFP_BACKEND_VERSION = "2.14.0"
# S3/MinIO settings for the steps that read the feature tables: an optional Secret holding
# an AWS `config` file (endpoint_url, region) and a `credentials` file.
OBJECT_STORAGE_SECRET = "ct-object-storage"
OBJECT_STORAGE_MOUNT = "/var/run/secrets/ct-object-storage"


@dataclasses.dataclass(frozen=True)
class StepResources:
    """What a step's pod asks for and may use, how long it may run, how often it is retried."""

    cpu: str
    memory: str
    cpu_limit: str
    memory_limit: str
    timeout_seconds: int
    retries: int = 0


# Requests cover the peak each step reached on one month of flights (bench/local_run.py, about:
# ingest 180 MiB, materialize 235, statistics 650, validate_data 610, data_gate 46, train 615,
# evaluate 585, validate_model 120, infra_validate 535, push 120) with room to spare; limits
# leave room for a window of several months.
RESOURCES = {
    "ingest": StepResources("500m", "512Mi", "2", "4Gi", 1800),
    "materialize": StepResources("250m", "512Mi", "1", "2Gi", 1800, retries=2),
    "statistics": StepResources("1", "1Gi", "2", "6Gi", 3600),
    "validate-data": StepResources("250m", "1Gi", "1", "2Gi", 900),
    "data-gate": StepResources("100m", "128Mi", "500m", "256Mi", 300),
    "train": StepResources("1", "1Gi", "4", "8Gi", 7200),
    "evaluate": StepResources("500m", "1Gi", "2", "4Gi", 1800),
    "validate-model": StepResources("100m", "256Mi", "500m", "512Mi", 300),
    "infra-validate": StepResources("500m", "1Gi", "2", "3Gi", 1200),
    "push": StepResources("250m", "256Mi", "1", "1Gi", 900),
    "finalize": StepResources("100m", "128Mi", "500m", "256Mi", 300, retries=2),
}
RETRY_BACKOFF = "30s"


def declare(task: dsl.PipelineTask, resources: StepResources) -> None:
    """Requests, limits, timeout (the pod's activeDeadlineSeconds) and retries of one step."""
    task.set_cpu_request(resources.cpu).set_memory_request(resources.memory)
    task.set_cpu_limit(resources.cpu_limit).set_memory_limit(resources.memory_limit)
    kubernetes.set_timeout(task, resources.timeout_seconds)
    if resources.retries:
        task.set_retry(num_retries=resources.retries, backoff_duration=RETRY_BACKOFF)


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
    eval_split: str = "time",
    statistics_engine: str = "memory",
    beam_pipeline_args: str = "",
    categorical_drift_threshold: float = 0.1,
    numeric_drift_threshold: float = 0.1,
    epochs: int = 5,
    batch_size: int = 256,
    learning_rate: float = 0.005,
    hidden_units: str = "64,32",
    seed: int = 42,
    min_auc: float = 0.6,
    max_auc_drop: float = 0.01,
    max_slice_auc_drop: float = 0.05,
    min_slice_examples: int = 200,
    blessing_confidence: float = 0.95,
    home_volume: str = "ct-home",
    feature_repo: str = str(CLUSTER_HOME.feature_repo),
    statistics_root: str = str(CLUSTER_HOME.statistics),
    feature_redis: str = "",
    feature_tables: str = "",
) -> str:
    # An empty run_id (a recurring run) falls back to KFP's job id inside each step.
    common = {"metadata_connection": metadata_connection, "run_id": run_id, "job_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER}
    # Last, whatever happened to the steps (on a cluster): the run ends decided, and says how.
    closing = finalize(**common)
    with dsl.ExitHandler(closing, name="steps"):
        # The feature tables: feature_tables (a folder or s3:// URI) or, empty, data_root/features.
        examples = ingest(
            data_root=data_root,
            feature_tables=feature_tables,
            dataset=dataset,
            window_spans=window_spans,
            eval_percent=eval_percent,
            eval_split=eval_split,
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
            statistics_root=statistics_root,
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
            train_examples=examples.outputs["train_examples"],
            eval_examples=examples.outputs["eval_examples"],
            **common,
        )
        gate = data_gate(anomalies=validation.outputs["anomalies"], **common)
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
            blessing_confidence=blessing_confidence,
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
        trained.after(gate)
        pushed.after(features)  # a pushed model finds its features online
    for task in (examples, features, stats, validation, gate, trained, evaluation, blessing, infra, pushed, closing):
        kubernetes.mount_pvc(task, pvc_name=home_volume, mount_path=HOME_MOUNT)
        declare(task, RESOURCES[task.name])
    for task in (examples, features):  # they read the feature tables, maybe from object storage
        kubernetes.use_secret_as_volume(
            task, secret_name=OBJECT_STORAGE_SECRET, mount_path=OBJECT_STORAGE_MOUNT, optional=True
        )
        task.set_env_variable("AWS_CONFIG_FILE", f"{OBJECT_STORAGE_MOUNT}/config")
        task.set_env_variable("AWS_SHARED_CREDENTIALS_FILE", f"{OBJECT_STORAGE_MOUNT}/credentials")
    return closing.output
