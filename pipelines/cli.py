"""`ct`: the command line of continuous training.

    ct data flights --dest DIR --months 2013-01..2013-03   write spans of real data
    ct schema infer --data DIR/span=2013-01 --out schema.pbtxt
    ct run --data-root DIR [--home H] [--param k=v ...]    run the pipeline locally (kfp.local)
    ct runs / ct lineage [VERSION]                          read ML Metadata
    ct compile [--out FILE]                                 write the KFP IR YAML spec
    ct serve / ct watch / ct trigger                        serve models; retrain when triggers fire
    ct features apply --data-root DIR                       register the feature store's definitions (Feast)
    ct submit / ct schedule / ct rollout                    runs, schedules and KServe rollouts in a cluster
    ct demo                                                 2013 replayed: traffic, feedback, triggers, canaries
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
import time
from pathlib import Path

from components.common.errors import DataError
from features.store import FeatureStoreError
from pipelines.rollout import RolloutError
from pipelines.submit import SubmitError
from pipelines.config import (DEFAULT_DATASET, DEFAULT_HOME, MODEL_VERSION_ENV, ConfigError, Home, ServingConfig,
                              load_dataset, parse_parameters)


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ start-up chatter and Google client libraries' Python-version notices
    # would drown the commands' own output; an explicit TF_CPP_MIN_LOG_LEVEL still wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, DataError, SubmitError, RolloutError, FeatureStoreError, ValueError, KeyError) as error:
        print(f"ct {args.command}: {error}", file=sys.stderr)
        return 2 if isinstance(error, DataError) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ct", description="Continuous training on Kubeflow Pipelines.")
    commands = parser.add_subparsers(dest="command", required=True)
    home_options = argparse.ArgumentParser(add_help=False)
    home_options.add_argument("--home", type=Path, default=DEFAULT_HOME, help="the home folder (default .ct)")
    home_options.add_argument("--metadata", default="", help="ML Metadata connection, e.g. grpc://metadata-grpc-service:8080 "
                                                     "(default: HOME/metadata.sqlite)")

    data = commands.add_parser("data", help="write spans of a bundled dataset as they would arrive")
    data.add_argument("dataset", choices=("flights", "penguins"))
    data.add_argument("--dest", type=Path, required=True, help="data root; spans go to DEST/span=<id>/")
    data.add_argument("--months", default="2013-01..2013-12", help="flights: YYYY-MM or YYYY-MM..YYYY-MM")
    data.add_argument("--years", default="", help="penguins: comma-separated years (default: all)")
    data.add_argument("--format", default="parquet", choices=("parquet", "csv"))
    data.add_argument("--feature-tables", default="", help="flights: where the feature store's tables go, a folder "
                                                           "or s3://bucket/prefix (default DEST/features)")
    data.set_defaults(handler=_data)

    schema = commands.add_parser("schema", help="schema tools")
    schema_commands = schema.add_subparsers(dest="schema_command", required=True)
    infer = schema_commands.add_parser("infer", help="infer a TFDV schema to review and commit")
    infer.add_argument("--data", type=Path, action="append", required=True, help="a span folder (repeatable)")
    infer.add_argument("--dataset", default=DEFAULT_DATASET)
    infer.add_argument("--out", type=Path, required=True)
    infer.set_defaults(handler=_schema_infer)

    run = commands.add_parser("run", parents=[home_options], help="run the pipeline locally through kfp.local")
    run.add_argument("--data-root", type=Path, required=True)
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a pipeline parameter (repeatable)")
    run.add_argument("--reason", default="", help="why this run, recorded with it")
    run.add_argument("--trigger", default="manual", help="what started this run, recorded with it")
    run.add_argument("--run-id", default=None, help="the run's id (default: a new one)")
    run.set_defaults(handler=_run)

    trigger = commands.add_parser("trigger", help="ask the watching controller for a run now")
    trigger.add_argument("--reason", required=True)
    trigger.add_argument("--home", type=Path, default=DEFAULT_HOME)
    trigger.add_argument("--force", action="store_true", help="skip the cooldown and retrain even on data trained on before")
    trigger.set_defaults(handler=_trigger)

    watch = commands.add_parser("watch", help="run the trigger controller: retrain when a trigger fires")
    watch.add_argument("--config", type=Path, action="append", required=True,
                       help="triggers.yaml; repeat to add settings from more files")
    watch.add_argument("--heartbeat", type=Path, default=None, help="a file touched after every check (liveness probe)")
    watch.set_defaults(handler=_watch)

    runs = commands.add_parser("runs", parents=[home_options], help="list runs recorded in ML Metadata")
    runs.set_defaults(handler=_runs)

    lineage = commands.add_parser("lineage", parents=[home_options], help="a pushed model's lineage back to its spans")
    lineage.add_argument("version", nargs="?", type=int, help="model version (default: the one in production)")
    lineage.add_argument("--dataset", default=DEFAULT_DATASET)
    lineage.set_defaults(handler=_lineage)

    for name, help_text in (("submit", "create a run on a Kubeflow Pipelines cluster"),
                            ("schedule", "create a recurring run on a Kubeflow Pipelines cluster (idempotent)")):
        cluster = commands.add_parser(name, help=help_text)
        cluster.add_argument("--host", required=True, help="the KFP API, e.g. http://localhost:8080")
        cluster.add_argument("--namespace", default=None, help="the profile namespace (multi-user Kubeflow)")
        cluster.add_argument("--experiment", default="continuous-training")
        cluster.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                             help="a pipeline parameter; data_root and model_repository are required")
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
    rollout.add_argument("--metadata", default="", help="record promotions and rollbacks in this ML Metadata "
                                                        f"(e.g. {CLUSTER_METADATA})")
    rollout.set_defaults(handler=_rollout)

    serve = commands.add_parser("serve", parents=[home_options], help="serve the model repository (TF Serving REST and Open Inference Protocol v2)")
    serve.add_argument("--dataset", default=DEFAULT_DATASET, help="whose model to serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8501)
    serve.add_argument("--canary-percent", type=int, default=ServingConfig.canary_percent)
    serve.add_argument("--canary-min-labelled", type=int, default=ServingConfig.canary_min_labelled)
    serve.add_argument("--canary-auc-tolerance", type=float, default=ServingConfig.canary_auc_tolerance)
    serve.add_argument("--request-log-sample", type=float, default=ServingConfig.request_log_sample)
    serve.add_argument("--model-version", type=int, default=_env_int(MODEL_VERSION_ENV),
                       help=f"serve only this version, no canary of our own (a KServe revision; env {MODEL_VERSION_ENV})")
    serve.set_defaults(handler=_serve)

    compile_ = commands.add_parser("compile", help="write the KFP pipeline spec (IR YAML)")
    compile_.add_argument("--out", type=Path, default=None)
    compile_.set_defaults(handler=_compile)

    demo = commands.add_parser("demo", help="replay 2013 month by month: serving, feedback, triggers, retraining, canaries")
    demo.add_argument("--home", type=Path, default=Path(".ct-demo"))
    demo.add_argument("--months", default="2013-01..2013-12", help="the months to replay")
    demo.add_argument("--rows-per-month", type=int, default=2000, help="flights sent as live traffic each month")
    demo.set_defaults(handler=_demo)
    return parser


def _data(args) -> int:
    from pipelines.sample_data import flight_spans, parse_months, penguin_spans, write_span

    spans = (flight_spans(parse_months(args.months)) if args.dataset == "flights"
             else penguin_spans([y for y in args.years.split(",") if y] or None))
    for span in spans:
        folder = write_span(args.dest, span, args.format)
        print(f"{folder}: {len(span.frame)} rows; dropped {span.dropped} ({span.dropped_reason})")
    if load_dataset(args.dataset).feature_store:
        from features.sources import table_location, tables_root, write_sources

        root = tables_root(args.dest, args.feature_tables)
        for name, rows in write_sources(root).items():
            print(f"{table_location(root, name)}: {rows} rows (feature store table)")
    return 0


def _schema_infer(args) -> int:
    import pandas as pd
    import tensorflow_data_validation as tfdv

    from components.common.spans import SpanFolder, read_spans
    from components.statistics.logic import statistics_of_dataframe
    from components.validate_data.logic import infer_schema

    config = load_dataset(args.dataset)
    spans = [read_spans([SpanFolder(path.name, path)]) for path in args.data]
    if config.feature_store:  # the features of each span's flights, as ingest joins them
        from components.ingest.logic import examples_with_features
        from features.sources import FEATURES_FOLDER

        spans = [examples_with_features(span, config, path.parent / FEATURES_FOLDER, str(path))[0]
                 for span, path in zip(spans, args.data)]
    frame = pd.concat(spans, ignore_index=True)
    schema = infer_schema(statistics_of_dataframe(frame), config.categorical_features, config.label,
                          [statistics_of_dataframe(span) for span in spans])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(schema, str(args.out))
    print(f"{args.out}: {len(schema.feature)} features from {len(frame)} rows; review it, then commit it as {config.schema_path.name}")
    return 0


def _run(args) -> int:
    from pipelines.local_run import describe, exit_code, pipeline_parameters, run_locally

    declared = {name: kind for name, (kind, _) in pipeline_parameters().items()}
    parameters = parse_parameters(args.param, declared)
    home = Home(args.home, args.metadata)
    run = run_locally(home, args.data_root, parameters, trigger=args.trigger, reason=args.reason, run_id=args.run_id)
    print(describe(run))
    print(f"log: {home.logs / (run.run_id + '.log')}")
    return exit_code(run)


CLUSTER_METADATA = "grpc://metadata-grpc-service.kubeflow:8080"


def _cluster(args) -> int:
    from pipelines.local_run import new_run_id, pipeline_parameters
    from pipelines.submit import KfpApi
    from pipelines.triggers.cron import parse_cron

    declared = {name: kind for name, (kind, _) in pipeline_parameters(include_wired=True).items()}
    parameters = {"metadata_connection": CLUSTER_METADATA, **parse_parameters(args.param, declared)}
    missing = [name for name in ("data_root", "model_repository") if name not in parameters]
    if missing:
        raise ConfigError(f"--param {missing[0]}=...: required for a cluster run (a path or URI the steps can read)")
    if args.command == "submit":
        run_id = parameters.setdefault("run_id", new_run_id())
        parameters.update(trigger="manual", reason=args.reason)
        submitted = KfpApi(args.host, args.namespace).submit_run(parameters, args.experiment, run_id)
    else:
        parse_cron(args.cron)
        parameters.update(run_id="", trigger="schedule", reason=args.reason or f"cron '{args.cron}'")
        submitted = KfpApi(args.host, args.namespace).schedule(args.cron, parameters, args.experiment, args.name)
    state = "created" if submitted.created else "already there, unchanged"
    print(f"{submitted.kind} {submitted.id} ({state})\n{submitted.url}")
    return 0


def _features_apply(args) -> int:
    from features.sources import FEATURES_FOLDER
    from features.store import apply

    home = Home(args.home).create()
    views = apply(home.feature_repo, (args.data_root / FEATURES_FOLDER).resolve(), args.redis)
    print(f"{home.feature_repo}: feature views {', '.join(views)} registered "
          f"(online store: {'redis ' + args.redis if args.redis else 'SQLite in the home'})")
    return 0


def _rollout(args) -> int:
    from pipelines.rollout import InferenceServiceRollout

    if (args.action == "deploy") != (args.version is not None):
        raise ConfigError("a version is given with deploy, and only with deploy")
    rollout = InferenceServiceRollout.in_cluster_or_kubeconfig(args.namespace, args.name)
    before = rollout.state()
    if args.action == "deploy":
        after = rollout.deploy(args.version, args.canary_percent)
    elif args.action == "promote":
        after = rollout.promote()
    elif args.action == "rollback":
        after = rollout.roll_back()
    else:
        after = before
    if args.action in ("promote", "rollback") and args.metadata:
        from components.common import metadata

        decision = metadata.PROMOTED if args.action == "promote" else metadata.ROLLED_BACK
        metadata.MetadataStore(args.metadata).record_canary_decision(
            load_dataset(args.dataset).model_name, before.version, decision, f"ct rollout {args.action}", {})
    canary = f", canary at {after.canary_percent}%" if after.canary else ""
    print(f"{args.namespace}/{args.name}: version {after.version} (stable {after.stable_version}{canary}, "
          f"ready {after.ready})")
    return 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value else None


def _trigger(args) -> int:
    from pipelines.triggers.sources import request_manual_run

    path = request_manual_run(Home(args.home).triggers, args.reason, args.force)
    print(f"requested: {path.name} (picked up by `ct watch` on its next check)")
    return 0


def _watch(args) -> int:
    import logging

    from pipelines.triggers.controller import build_controller

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    controller = build_controller(checked_trigger_config(*args.config))
    print(f"watching with triggers: {', '.join(t.name for t in controller.triggers)}", flush=True)
    try:
        controller.run_forever(args.heartbeat)
    except KeyboardInterrupt:
        pass
    return 0


def checked_trigger_config(*paths: Path):
    """triggers.yaml, with its pipeline parameters checked against the pipeline's declared types.

    A cluster run (`kfp_host`) is given the paths `ct run` would set itself (data_root,
    model_repository, ...), so those are allowed there.
    """
    from pipelines.config import load_trigger_config
    from pipelines.local_run import pipeline_parameters

    config = load_trigger_config(*paths)
    declared = {name: kind for name, (kind, _) in pipeline_parameters(include_wired=bool(config.kfp_host)).items()}
    parse_parameters([f"{k}={v}" for k, v in config.parameters.items()], declared)
    return config


def _runs(args) -> int:
    from components.common.reports import markdown_table
    from pipelines.local_run import pipeline_parameters

    defaults = {name: default for name, (_, default) in pipeline_parameters().items()}
    rows = []
    for run in _store(args).runs():
        changed = {k: v for k, v in run.parameters.items() if k in defaults and v != defaults[k]}
        rows.append((run.run_id, _time(run.start), _time(run.end), run.properties.get("trigger", ""),
                     run.properties.get("reason", ""), " ".join(f"{k}={v}" for k, v in sorted(changed.items())) or "defaults",
                     run.decision or "running", run.properties.get("reasons", "")))
    print(markdown_table(("run", "start", "end", "trigger", "reason", "parameters", "decision", "why"), rows))
    return 0


def _lineage(args) -> int:
    from components.common.reports import markdown_table

    store = _store(args)
    model_name = load_dataset(args.dataset).model_name
    pushed = store.pushed_models(model_name)
    chosen = ([p for p in pushed if p.properties["version"] == args.version] if args.version is not None
              else [m for m in [store.production_model(model_name)] if m])
    if not chosen:
        raise KeyError(f"no pushed version {args.version if args.version is not None else '(none in production)'} "
                       f"of model {model_name!r}")
    entries = store.lineage(chosen[0].id)
    rows = [(e.produced_by or "(source)", e.artifact.type, e.artifact.uri,
             " ".join(f"{k}={v}" for k, v in sorted(e.artifact.properties.items()) if k not in ("reasons",)))
            for e in entries]
    print(f"model {model_name} version {chosen[0].properties['version']} (run {entries[0].run_id})")
    print(markdown_table(("produced by", "artifact", "uri", "properties"), rows))
    return 0


def _store(args):
    from components.common.metadata import MetadataStore

    home = Home(args.home, args.metadata)
    if not home.metadata and not home.metadata_path.is_file():
        raise ConfigError(f"{home.metadata_path}: no ML Metadata store (nothing has run with --home {args.home})")
    return MetadataStore(home.metadata_connection)


def _serve(args) -> int:
    import logging

    from components.common.metadata import MetadataStore
    from serving.request_log import ParquetLog, RequestLog
    from serving.server import PredictionServer
    from serving.service import PredictionService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServingConfig(canary_percent=args.canary_percent, canary_min_labelled=args.canary_min_labelled,
                           canary_auc_tolerance=args.canary_auc_tolerance, request_log_sample=args.request_log_sample,
                           pinned_version=args.model_version)
    home = Home(args.home, args.metadata).create()
    dataset = load_dataset(args.dataset)
    model_name = dataset.model_name
    request_log = RequestLog(home.request_log, config.request_log_sample, config.request_log_rotate_rows,
                             config.request_log_max_bytes)
    feedback_log = ParquetLog(home.feedback_log, config.request_log_rotate_rows, config.request_log_max_bytes)
    service = PredictionService(home.model_repository, model_name, config, request_log,
                                MetadataStore(home.metadata_connection),
                                feature_repo=home.feature_repo if dataset.feature_store else None, feedback_log=feedback_log)
    server = PredictionServer((args.host, args.port), service)
    service.start()
    print(f"serving {model_name} from {home.model_repository} at {server.url} "
          f"(versions: {[m.version for m in service.registry.routing.models] or 'none yet'})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.stop()
    return 0


def _compile(args) -> int:
    from pipelines.compile import COMPILED_SPEC, compile_pipeline

    print(compile_pipeline(args.out or COMPILED_SPEC))
    return 0


def _demo(args) -> int:
    from pipelines.demo import run_demo

    return run_demo(args.home, args.months, args.rows_per_month)


def _time(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"


if __name__ == "__main__":
    sys.exit(main())
