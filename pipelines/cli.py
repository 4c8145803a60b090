"""`ct`: the command line of continuous training.

ct data flights --dest DIR --months 2013-01..2013-03   write spans of real data
ct schema infer --data DIR/span=2013-01 --out schema.pbtxt
ct run --data-root DIR [--home H] [--param k=v ...]    run the pipeline locally (kfp.local)
ct runs / ct lineage [VERSION]                          read ML Metadata
ct gc [--dry-run] [--keep-models N] [--keep-runs K]     delete old runs' outputs, logs and models
ct compile [--out FILE]                                 write the KFP IR YAML spec
ct serve / ct watch / ct trigger                        serve models; retrain when triggers fire
ct features apply --data-root DIR                       register the feature store's definitions (Feast)
ct submit / ct schedule / ct rollout                    runs, schedules and KServe rollouts in a cluster
ct demo                                                 2013 replayed: traffic, feedback, triggers, canaries

Exit codes: 0 done (a run completed, pushed or not blessed); 1 a run failed, or a setting,
file, folder or service cannot be used (the message names it); 2 bad data (a run stopped by
data validation, input data that cannot be used) or a command line that does not parse;
130 interrupted (Ctrl-C). Nothing a user can type ends in a traceback.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import warnings
from pathlib import Path
from typing import Callable

from components.common.datasets import DEFAULT_DATASET, load_dataset
from components.common.errors import ConfigError, CtError, DataError
from components.common.home import DEFAULT_HOME, KUBEFLOW_METADATA, Home
from components.common.metadata import PROMOTED, ROLLED_BACK
from components.common.spans import Location, data_location
from pipelines.local_run import RUNNERS, WARM
from pipelines.retention import RetentionSettings
from serving.canary.judge import SequentialTest
from serving.config import MODEL_VERSION_ENV, ServingConfig
from serving.credentials import TOKEN_ENV


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ start-up chatter and Google client libraries' Python-version notices
    # would drown the commands' own output; an explicit TF_CPP_MIN_LOG_LEVEL still wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
    parser = _parser()
    args = parser.parse_args(argv)
    code = _reported(args.command, lambda: args.handler(args))
    if argv is None:  # the program's own command line: the process ends next, and the collector's
        gc.freeze()  # passes over every object on the way out add 0.2 s to a `ct run`; refcounts still free them
    return code


def _reported(command: str, run: Callable[[], int]) -> int:
    """`run()`'s exit status; an error it raises is said in one line on stderr, and its status returned."""
    try:
        return run()
    except CtError as error:
        print(f"ct {command}: {error}", file=sys.stderr)
        return 2 if isinstance(error, DataError) else 1
    except OSError as error:  # the last line of defence: a file or folder the layers below did not name
        where = ": ".join(str(name) for name in (error.filename, error.filename2) if name)
        print(f"ct {command}: {where + ': ' if where else ''}{error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ct", description="Continuous training on Kubeflow Pipelines.")
    commands = parser.add_subparsers(dest="command", required=True)
    home_options = argparse.ArgumentParser(add_help=False)
    home_options.add_argument("--home", type=Path, default=DEFAULT_HOME, help="the home folder (default .ct)")
    home_options.add_argument(
        "--metadata",
        default="",
        help="ML Metadata connection, e.g. grpc://metadata-grpc-service:8080 (default: HOME/metadata.sqlite)",
    )

    data = commands.add_parser("data", help="write spans of a bundled dataset as they would arrive")
    data.add_argument("dataset", choices=("flights", "penguins"))
    data.add_argument("--dest", type=Path, required=True, help="data root; spans go to DEST/span=<id>/")
    data.add_argument("--months", default="2013-01..2013-12", help="flights: YYYY-MM or YYYY-MM..YYYY-MM")
    data.add_argument("--years", default="", help="penguins: comma-separated years (default: all)")
    data.add_argument("--format", default="parquet", choices=("parquet", "csv"))
    data.add_argument(
        "--scale",
        type=int,
        default=1,
        help="flights: the months that many times, a year later each time, with jittered weather "
        "(a larger window with the real distributions; 31 makes about 10 M rows)",
    )
    data.add_argument(
        "--feature-tables",
        default="",
        help="flights: where the feature store's tables go, a folder or s3://bucket/prefix (default DEST/features)",
    )
    data.set_defaults(handler=_data)

    schema = commands.add_parser("schema", help="schema tools")
    schema_commands = schema.add_subparsers(dest="schema_command", required=True)
    infer = schema_commands.add_parser("infer", help="infer a TFDV schema to review and commit")
    infer.add_argument("--data", type=Path, action="append", required=True, help="a span folder (repeatable)")
    infer.add_argument("--dataset", default=DEFAULT_DATASET)
    infer.add_argument("--out", type=Path, required=True)
    infer.set_defaults(handler=_schema_infer)

    run = commands.add_parser("run", parents=[home_options], help="run the pipeline locally through kfp.local")
    run.add_argument("--data-root", type=_data_root, required=True, help="a folder, or an s3:// URI")
    run.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="a pipeline parameter (repeatable)"
    )
    run.add_argument("--reason", default="", help="why this run, recorded with it")
    run.add_argument("--trigger", default="manual", help="what started this run, recorded with it")
    run.add_argument("--run-id", default=None, help="the run's id (default: a new one)")
    run.add_argument(
        "--runner",
        default=WARM,
        choices=RUNNERS,
        help="each step as a process here forked from a host that imported the stack once (default, fast), "
        "started anew (as kfp.local does), or in a container of the image, mounted as on a cluster",
    )
    run.set_defaults(handler=_run)

    trigger = commands.add_parser("trigger", help="ask the watching controller for a run now")
    trigger.add_argument("--reason", required=True)
    trigger.add_argument("--home", type=Path, default=DEFAULT_HOME)
    trigger.add_argument(
        "--force", action="store_true", help="skip the cooldown and retrain even on data trained on before"
    )
    trigger.set_defaults(handler=_trigger)

    watch = commands.add_parser("watch", help="run the trigger controller: retrain when a trigger fires")
    watch.add_argument(
        "--config",
        type=Path,
        action="append",
        required=True,
        help="triggers.yaml; repeat to add settings from more files",
    )
    watch.add_argument("--heartbeat", type=Path, default=None, help="a file touched after every check (liveness probe)")
    watch.set_defaults(handler=_watch)

    runs = commands.add_parser("runs", parents=[home_options], help="list runs recorded in ML Metadata")
    shown = runs.add_mutually_exclusive_group()
    shown.add_argument(
        "--last", type=_run_count, default=20, help="the runs started last to show (default %(default)s)"
    )
    shown.add_argument("--all", action="store_true", help="every run recorded")
    gc = commands.add_parser(
        "gc", parents=[home_options], help="delete what the home keeps no longer: old runs' outputs and logs, models"
    )
    gc.add_argument(
        "--keep-models",
        type=int,
        default=RetentionSettings.keep_models,
        help="live versions kept below the production model, never collected (default %(default)s)",
    )
    gc.add_argument(
        "--keep-runs",
        type=int,
        default=RetentionSettings.keep_runs,
        help="the newest runs whose outputs and logs are kept, beside kept models' lineage (default %(default)s)",
    )
    gc.add_argument("--dry-run", action="store_true", help="only list what would go, and its size")
    gc.set_defaults(handler=_gc)
    runs.set_defaults(handler=_runs)

    lineage = commands.add_parser("lineage", parents=[home_options], help="a pushed model's lineage back to its spans")
    lineage.add_argument("version", nargs="?", type=int, help="model version (default: the one in production)")
    lineage.add_argument("--dataset", default=DEFAULT_DATASET)
    lineage.set_defaults(handler=_lineage)

    for name, help_text in (
        ("submit", "create a run on a Kubeflow Pipelines cluster"),
        ("schedule", "create a recurring run on a Kubeflow Pipelines cluster (idempotent)"),
    ):
        cluster = commands.add_parser(name, help=help_text)
        cluster.add_argument("--host", required=True, help="the KFP API, e.g. http://localhost:8080")
        cluster.add_argument("--namespace", default=None, help="the profile namespace (multi-user Kubeflow)")
        cluster.add_argument("--experiment", default="continuous-training")
        cluster.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="a pipeline parameter; data_root and model_repository are required",
        )
        cluster.add_argument("--reason", default="", help="why, recorded with the run(s)")
        if name == "schedule":
            cluster.add_argument("--cron", required=True, help="five fields, e.g. '0 6 * * *'")
            cluster.add_argument("--name", default="continuous-training-schedule", help="the recurring run's name")
        cluster.set_defaults(handler=_cluster)

    features = commands.add_parser("features", help="the feature store (Feast)")
    feature_commands = features.add_subparsers(dest="features_command", required=True)
    apply_ = feature_commands.add_parser("apply", parents=[home_options], help="register the feature definitions")
    apply_.add_argument("--data-root", type=Path, required=True, help="where `ct data` wrote the spans and features/")
    apply_.add_argument("--redis", default="", help="online store on Redis (host:port) instead of SQLite in the home")
    apply_.set_defaults(handler=_features_apply)

    rollout = commands.add_parser("rollout", help="canary, promote or roll back the KServe InferenceService")
    rollout.add_argument("action", choices=["status", "deploy", "promote", "rollback"])
    rollout.add_argument("version", nargs="?", type=int, help="the model version to deploy")
    rollout.add_argument("--canary-percent", type=int, default=10, help="traffic share of a deployed version")
    rollout.add_argument("--namespace", default="ct")
    rollout.add_argument("--name", default="ct-predictor", help="the InferenceService")
    rollout.add_argument("--dataset", default=DEFAULT_DATASET, help="whose model (for ML Metadata)")
    rollout.add_argument(
        "--metadata", default="", help=f"record promotions and rollbacks in this ML Metadata (e.g. {KUBEFLOW_METADATA})"
    )
    rollout.set_defaults(handler=_rollout)

    serve = commands.add_parser(
        "serve",
        parents=[home_options],
        help="serve the model repository (TF Serving and Open Inference Protocol v2, over REST and gRPC)",
    )
    serve.add_argument("--dataset", default=DEFAULT_DATASET, help="whose model to serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8501)
    serve.add_argument(
        "--grpc-port",
        type=_port,
        default=8500,
        help="gRPC port (TF Serving's PredictionService and ModelService, the Open Inference "
        "Protocol's GRPCInferenceService), 8500 as TF Serving's; 0 turns gRPC off",
    )
    serve.add_argument(
        "--workers",
        type=_positive("a number of worker processes"),
        default=1,
        help="serving processes sharing the port, for more requests/s than one process's GIL allows; "
        "each loads the models, and the limits apply to each",
    )
    serve.add_argument(
        "--max-connections",
        type=_positive("a number of connections"),
        default=ServingConfig.max_connections,
        help="open client connections each worker keeps; a connection no worker has room for gets a 503",
    )
    serve.add_argument("--canary-percent", type=int, default=ServingConfig.canary_percent)
    canary = SequentialTest()
    serve.add_argument(
        "--canary-min-labelled",
        type=int,
        default=canary.min_labelled,
        help="labelled predictions each version needs before the canary test first looks",
    )
    serve.add_argument(
        "--canary-max-labelled",
        type=int,
        default=canary.max_labelled,
        help="the canary's labelled predictions after which an undecided test is inconclusive",
    )
    serve.add_argument(
        "--canary-worse-auc", type=float, default=canary.worse_auc, help="the online AUC loss the test must catch"
    )
    serve.add_argument(
        "--canary-false-rollback",
        type=float,
        default=canary.false_rollback,
        help="chance of rolling back a canary as good as stable",
    )
    serve.add_argument(
        "--canary-missed-worse",
        type=float,
        default=canary.missed_worse,
        help="chance of promoting a canary worse by --canary-worse-auc",
    )
    serve.add_argument(
        "--canary-when-inconclusive",
        choices=(ROLLED_BACK, PROMOTED),
        default=canary.when_inconclusive,
        help="the decision when the test reaches --canary-max-labelled undecided",
    )
    serve.add_argument("--request-log-sample", type=float, default=ServingConfig.request_log_sample)
    serve.add_argument(
        "--request-log-flush-seconds",
        type=float,
        default=ServingConfig.request_log_flush_seconds,
        help="how often the request and feedback logs are written out",
    )
    serve.add_argument(
        "--max-batch-rows",
        type=int,
        default=ServingConfig.max_batch_rows,
        help="most rows of concurrent requests scored in one model call",
    )
    serve.add_argument(
        "--batch-wait-seconds",
        type=float,
        default=ServingConfig.batch_wait_seconds,
        help="how long a batch waits for more requests while they arrive together (a lone request never waits)",
    )
    serve.add_argument(
        "--poll-seconds",
        type=float,
        default=ServingConfig.poll_seconds,
        help="how often the model repository is checked for new versions (the canary check and log writes fall then)",
    )
    serve.add_argument(
        "--canary-check-seconds",
        type=float,
        default=ServingConfig.canary_check_seconds,
        help="how often the canary test looks at the evidence",
    )
    serve.add_argument(
        "--canary-addressable",
        action="store_true",
        help="let clients address the canary by version or label (off: only the routing sends it traffic)",
    )
    serve.add_argument(
        "--model-version",
        type=_model_version,
        default=None,
        help=f"serve only this version, no canary of our own (a KServe revision; env {MODEL_VERSION_ENV})",
    )
    serve.set_defaults(handler=_serve)

    compile_ = commands.add_parser("compile", help="write the KFP pipeline spec (IR YAML)")
    compile_.add_argument("--out", type=Path, default=None)
    compile_.set_defaults(handler=_compile)

    demo = commands.add_parser(
        "demo", help="replay 2013 month by month: serving, feedback, triggers, retraining, canaries"
    )
    demo.add_argument("--home", type=Path, default=Path(".ct-demo"))
    demo.add_argument("--months", default="2013-01..2013-12", help="the months to replay")
    demo.add_argument("--rows-per-month", type=int, default=4000, help="flights sent as live traffic each month")
    demo.set_defaults(handler=_demo)
    return parser


def _port(text: str) -> int:
    """A TCP port, for argparse (a bad one is a usage error naming --port)."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number 0..65535")
    return int(text)


def _positive(what: str) -> Callable[[str], int]:
    """A parser of `what`, a positive integer, for argparse (anything else is a usage error naming it)."""

    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what}, a positive integer")
        return int(text)

    return parse


_run_count, _model_version = _positive("a number of runs"), _positive("a model version")


def _data(args) -> int:
    from pipelines.demo.sample_data import write_dataset

    written = write_dataset(
        args.dataset, args.dest, args.months, args.years, args.format, args.feature_tables, args.scale
    )
    for line in written:
        print(line)
    return 0


def _schema_infer(args) -> int:
    from pipelines.schema import infer_schema_from_spans

    print(infer_schema_from_spans(args.dataset, args.data, args.out))
    return 0


def _run(args) -> int:
    from pipelines.config import parse_parameters
    from pipelines.local_run import describe, exit_code, pipeline_parameters, run_locally

    declarations = pipeline_parameters()
    parameters = parse_parameters(args.param, {name: kind for name, (kind, _) in declarations.items()})
    home = Home(args.home, args.metadata)
    run = run_locally(
        home,
        args.data_root,
        parameters,
        trigger=args.trigger,
        reason=args.reason,
        run_id=args.run_id,
        runner=args.runner,
    )
    print(describe(run))
    print(f"log: {home.logs / (run.run_id + '.log')}")
    return exit_code(run)


def _cluster(args) -> int:
    from pipelines import submit

    if args.command == "submit":
        submitted = submit.submit(args.host, args.namespace, args.experiment, args.param, args.reason)
    else:
        submitted = submit.schedule(
            args.host, args.namespace, args.experiment, args.param, args.reason, args.cron, args.name
        )
    state = "created" if submitted.created else "already there, unchanged"
    print(f"{submitted.kind} {submitted.id} ({state})\n{submitted.url}")
    return 0


def _features_apply(args) -> int:
    from features.sources import FEATURES_FOLDER
    from features.store import apply

    home = Home(args.home).create()
    views = apply(home.feature_repo, (args.data_root / FEATURES_FOLDER).resolve(), args.redis)
    print(
        f"{home.feature_repo}: feature views {', '.join(views)} registered "
        f"(online store: {'redis ' + args.redis if args.redis else 'SQLite in the home'})"
    )
    return 0


def _data_root(text: str) -> Location:
    """argparse's type for a data root: its refusal, said as argparse says a bad value."""
    try:
        return data_location(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _rollout(args) -> int:
    from serving.canary.kserve import change_rollout

    state = change_rollout(
        args.action,
        args.version,
        args.canary_percent,
        args.namespace,
        args.name,
        load_dataset(args.dataset).model_name,
        args.metadata,
    )
    canary = f", canary at {state.canary_percent}%" if state.canary else ""
    print(
        f"{args.namespace}/{args.name}: version {state.version} (stable {state.stable_version}{canary}, "
        f"ready {state.ready})"
    )
    return 0


def _trigger(args) -> int:
    from pipelines.triggers.sources import request_manual_run

    path = request_manual_run(Home(args.home).triggers, args.reason, args.force)
    print(f"requested: {path.name} (picked up by `ct watch` on its next check)")
    return 0


def _watch(args) -> int:
    import logging

    from pipelines.triggers.config import load_checked_trigger_config
    from pipelines.triggers.controller import build_controller

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    controller = build_controller(load_checked_trigger_config(*args.config))
    print(f"watching with triggers: {', '.join(t.name for t in controller.triggers)}", flush=True)
    try:
        controller.run_forever(args.heartbeat)
    except KeyboardInterrupt:
        pass
    finally:
        controller.close()
    return 0


def _gc(args) -> int:
    from pipelines.retention import collect_home

    settings = RetentionSettings(keep_models=args.keep_models, keep_runs=args.keep_runs)
    print(collect_home(Home(args.home, args.metadata), settings, args.dry_run).describe())
    return 0


def _runs(args) -> int:
    from pipelines.history import runs_table

    print(runs_table(Home(args.home, args.metadata), None if args.all else args.last))
    return 0


def _lineage(args) -> int:
    from pipelines.history import lineage_table

    print(lineage_table(Home(args.home, args.metadata), load_dataset(args.dataset).model_name, args.version))
    return 0


def _serve(args) -> int:
    pinned = args.model_version
    if pinned is None and os.environ.get(MODEL_VERSION_ENV):
        try:
            pinned = _model_version(os.environ[MODEL_VERSION_ENV])
        except argparse.ArgumentTypeError as error:
            raise ConfigError(f"environment {MODEL_VERSION_ENV}={error}") from None
    config = ServingConfig(
        canary_percent=args.canary_percent,
        canary_test=SequentialTest(
            args.canary_min_labelled,
            args.canary_max_labelled,
            args.canary_worse_auc,
            args.canary_false_rollback,
            args.canary_missed_worse,
            args.canary_when_inconclusive,
        ),
        request_log_sample=args.request_log_sample,
        request_log_flush_seconds=args.request_log_flush_seconds,
        canary_check_seconds=args.canary_check_seconds,
        poll_seconds=args.poll_seconds,
        max_batch_rows=args.max_batch_rows,
        batch_wait_seconds=args.batch_wait_seconds,
        max_connections=args.max_connections,
        canary_addressable=args.canary_addressable,
        pinned_version=pinned,
    )
    home, token = Home(args.home, args.metadata), os.environ.get(TOKEN_ENV, "")

    def serving(seat=None) -> int:
        from serving.app import serve  # imported after any fork (serving/workers.py): TensorFlow is not fork-safe

        serve(home, args.dataset, config, args.host, args.port, token, args.grpc_port, seat)
        return 0

    if args.workers == 1:
        return serving()
    from serving.workers import serve_workers

    def worker(seat) -> int:
        return _reported("serve", lambda: serving(seat))

    return serve_workers(args.workers, args.host, args.port, args.grpc_port, worker)


def _compile(args) -> int:
    from pipelines.compile import COMPILED_SPEC, compile_release

    for path in compile_release(args.out or COMPILED_SPEC):
        print(path)
    return 0


def _demo(args) -> int:
    from pipelines.demo.replay import run_demo

    return run_demo(args.home, args.months, args.rows_per_month)


if __name__ == "__main__":
    sys.exit(main())
