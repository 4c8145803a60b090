"""Infra validation: the exported model must load and answer real requests like production did.

The model is loaded in a fresh process (nothing of training is in memory there), real
eval rows are sent in the TF Serving `instances` request format, single rows and one
batch, and its serving signature must match the production model's, so clients keep
working after the push.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

from components.common import model_io
from components.common.datasets import DatasetConfig
from components.common.reports import JsonRecord, markdown_table
from components.common.spans import read_file

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
) -> InfraBlessing:
    """Loads the model in a fresh process and checks it answers eval rows through its serving signature.

    Args:
        model_dir: The candidate SavedModel.
        eval_path: Parquet eval split; its first rows become the requests.
        dataset: Which columns a client sends (the features).
        production_dir: The production SavedModel, whose signature the candidate must keep.
        single_requests: How many one-row requests to send.
        batch_rows: Rows in the one batch request.
    """
    frame = read_file(eval_path, "parquet")
    rows = model_io.frame_to_instances(frame.head(max(single_requests, batch_rows)), dataset.features)
    requests = [{"instances": [row]} for row in rows[:single_requests]] + [{"instances": rows[:batch_rows]}]
    models = [str(model_dir)] + ([str(production_dir)] if production_dir else [])
    checks: list[tuple[str, bool, str]] = []
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "components.infra_validate.probe"],
            input=json.dumps({"models": models, "requests": requests}),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        checks.append(("loads in a fresh process", False, f"no answer within {PROBE_TIMEOUT_SECONDS} s"))
        return InfraBlessing(False, tuple(checks), math.nan, math.nan)
    if completed.returncode != 0:
        last_line = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        checks.append(("loads in a fresh process", False, f"exit code {completed.returncode}: {last_line}"))
        return InfraBlessing(False, tuple(checks), math.nan, math.nan)
    result = json.loads(completed.stdout)
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
