"""The data gate: nothing is trained on data with schema anomalies.

Data validation itself always completes, so its anomalies and drift views reach the
Kubeflow UI (a KFP step that fails uploads nothing); this gate is the step that stops the
run. It imports no TFDV: it reads what data validation wrote.
"""

from __future__ import annotations

from typing import Sequence

from components.common.errors import DataError


def stop_on_anomalies(anomalies: Sequence[str], files: Sequence[str]) -> None:
    """Passes clean data; stops the run on any anomaly.

    Raises:
        DataError: naming every anomaly (feature, what is wrong, a value) and the files read.
    """
    if anomalies:
        raise DataError("; ".join(anomalies), path=", ".join(files))
