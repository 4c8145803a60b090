"""Infra validation: the exported model must load and answer real requests like production did.

The model is loaded in a fresh process (nothing of training is in memory there), real
eval rows are sent in the TF Serving `instances` request format, single rows and one
batch, and its serving signature must match the production model's, so clients keep
working after the push.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
from pathlib import Path
from typing import Any

from components.common import model_io
from components.common.datasets import DatasetConfig
from components.common.process_lifetime import die_with_parent
from components.common.reports import JsonRecord, markdown_table
from components.common.spans import read_parquet_batches
from components.infra_validate.probe import answer

INFRA_BLESSED = "INFRA_BLESSED"
INFRA_NOT_BLESSED = "INFRA_NOT_BLESSED"
PROBE_TIMEOUT_SECONDS = 300


@dataclasses.dataclass(frozen=True)
class InfraBlessing(JsonRecord):
    blessed: bool
    checks: tuple[tuple[str, bool, str], ...]
    load_seconds: float
    p50_ms: float

    @property
    def verdict(self) -> str:
        return INFRA_BLESSED if self.blessed else INFRA_NOT_BLESSED

    @property
    def reasons(self) -> list[str]:
        failed = [f"{name}: {detail}" for name, passed, detail in self.checks if not passed]
        return failed or [f"all {len(self.checks)} checks passed"]

    def markdown(self) -> str:
        rows = [(name, "pass" if passed else "FAIL", detail) for name, passed, detail in self.checks]
        return f"## Infra validation: {self.verdict}\n\n" + markdown_table(("check", "verdict", "detail"), rows) + "\n"


def infra_validate(
    model_dir: Path,
    eval_path: Path,
    dataset: DatasetConfig,
    production_dir: Path | None = None,
    single_requests: int = 20,
    batch_rows: int = 100,
    start_method: str = "spawn",
) -> InfraBlessing:
    """Loads the model in a fresh process and checks it answers eval rows through its serving signature.

    Args:
        model_dir: The candidate SavedModel.
        eval_path: The eval split (a Parquet file or a folder of shards); its first rows
            become the requests (only they are read).
        dataset: Which columns a client sends (the features).
        production_dir: The production SavedModel, whose signature the candidate must keep.
        single_requests: How many one-row requests to send.
        batch_rows: Rows in the one batch request.
        start_method: How the fresh process starts (multiprocessing's start methods): `spawn`, a
            new interpreter; `fork`, a child of this process, without a second start and import
            of TensorFlow, and only where this process has run nothing of TensorFlow yet (its
            runtime's thread pools do not survive a fork), as a pipeline step's has not.
    """
    first_rows = next(read_parquet_batches(eval_path, max(single_requests, batch_rows), dataset.features))
    rows = model_io.frame_to_instances(first_rows, dataset.features)
    requests = [{"instances": [row]} for row in rows[:single_requests]] + [{"instances": rows[:batch_rows]}]
    models = [str(model_dir)] + ([str(production_dir)] if production_dir else [])
    checks: list[tuple[str, bool, str]] = []
    result = _answer_in_fresh_process(models, requests, start_method)
    if "failure" in result:
        checks.append(("loads in a fresh process", False, result["failure"]))
        return InfraBlessing(False, tuple(checks), math.nan, math.nan)
    checks.append(("loads in a fresh process", True, f"{result['load_seconds']:.2f} s"))
    signature = model_io.Signature(**result["signatures"][0])
    checks.append(("signature output", model_io.OUTPUT in signature.outputs, f"outputs {list(signature.outputs)}"))
    responses = result["responses"]
    answered = sum(
        len(response.get("predictions", [])) == len(request["instances"])
        for request, response in zip(requests, responses)
    )
    errors = [response["error"] for response in responses if "error" in response]
    checks.append(
        (
            "answers every request",
            answered == len(requests),
            f"{answered}/{len(requests)} answered" + (f"; first error: {errors[0]}" if errors else ""),
        )
    )
    predictions = [p for response in responses for p in response.get("predictions", [])]
    valid = all(0.0 <= p <= 1.0 for p in predictions)
    checks.append(("probabilities in [0, 1]", bool(predictions) and valid, f"{len(predictions)} predictions"))
    if production_dir is not None:
        differences = signature.differences(model_io.Signature(**result["signatures"][1]))
        checks.append(("signature same as production", not differences, "; ".join(differences) or "identical"))
    latencies = sorted(response["seconds"] for response in responses[:single_requests])
    p50_ms = 1000 * latencies[len(latencies) // 2] if latencies else math.nan
    return InfraBlessing(all(passed for _, passed, _ in checks), tuple(checks), result["load_seconds"], p50_ms)


def _answer_in_fresh_process(models: list[str], requests: list[dict[str, Any]], start_method: str) -> dict[str, Any]:
    """`probe.answer` in a new process; {"failure": why} when it raises, dies or takes too long."""
    context = multiprocessing.get_context(start_method)
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_answer_to, args=(sender, models, requests), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(PROBE_TIMEOUT_SECONDS):
            return {"failure": f"no answer within {PROBE_TIMEOUT_SECONDS} s"}
        return receiver.recv()
    except EOFError:
        child.join()
        return {"failure": f"the process died (exit code {child.exitcode})"}
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join()


def _answer_to(sender, models: list[str], requests: list[dict[str, Any]]) -> None:
    die_with_parent()  # a step killed mid-probe leaves no probe behind
    try:
        sender.send(answer(models, requests))
    except Exception as error:  # a model that cannot load is the verdict, not a crash of the step
        sender.send({"failure": f"{type(error).__name__}: {error}"})
