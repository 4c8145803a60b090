"""How far TFDV's distances move by sampling noise alone at a window's size, so that the
distribution-shift trigger fires on shifts, not on small samples.

TFDV's L-infinity distance (categorical features) and Jensen-Shannon divergence (numeric
ones, over histograms rebucketed between each side's minimum and maximum) are not zero
between two samples of one distribution: on a window of a few hundred rows noise alone
passes thresholds meant for real shifts, and with some twenty features one of them does
so in most windows. Each comparison is therefore a Monte Carlo test against resamples of
its reference at the window's size:

- skew (the window against the production model's training statistics): a parametric
  bootstrap from those statistics, the only thing kept of the training data
  (`ParametricReference`);
- drift (the window against the window before it): a permutation test, the two windows'
  rows pooled and split at random into two windows (`drift_noise`). It is exact when a
  steady stream's rows are exchangeable; resampling the previous window alone is not
  (measured: 6 of 30 steady windows of 200 rows fired where 0.025 was meant), since a resample
  never reaches beyond that window's extremes, between which Jensen-Shannon rebuckets.

Across features the family-wise rate is held by a single-step max-T test (Westfall and
Young, 1993): each resample's distances are standardized by the feature's mean and
standard deviation over the resamples, the largest standardized distance of each resample
is kept, and the critical value is the `allowed_exceedances`-th largest of those maxima
(the Monte Carlo rank rule: a steady stream's own maximum passes it with probability at
most `allowed_exceedances / (resamples + 1)`). A feature's noise threshold is its mean
plus the critical value times its standard deviation. Skew and drift share a check's
`false_alarm_rate` equally (Bonferroni), so a check of a steady stream fires falsely with
probability at most `false_alarm_rate`: for drift exactly (rows exchangeable); for skew as
far as the statistics describe the training data (see `ParametricReference`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

if TYPE_CHECKING:
    from components.validate_data.logic import FeatureDrift

# Skew and drift: each is tested at the check's false-alarm rate divided by this.
COMPARISONS_PER_CHECK = 2
# Rounds of iterative proportional fitting of a numeric feature's density to its two histograms.
FITTING_ROUNDS = 50

Statistics = statistics_pb2.DatasetFeatureStatisticsList


def allowed_exceedances(false_alarm_rate: float, resamples: int) -> int:
    """How many resampled maxima may reach the critical value in one comparison: the Monte
    Carlo rank rule at level `false_alarm_rate / COMPARISONS_PER_CHECK`."""
    return math.floor(false_alarm_rate / COMPARISONS_PER_CHECK * (resamples + 1) + 1e-9)


def minimum_resamples(false_alarm_rate: float) -> int:
    """The fewest resamples with which a comparison can hold `false_alarm_rate`."""
    return math.ceil(COMPARISONS_PER_CHECK / false_alarm_rate - 1 - 1e-9)


@dataclasses.dataclass(frozen=True)
class NoiseThresholds:
    """Per feature, the distance above which it is more than noise: at windows of `rows` rows,
    sampling noise alone carries any feature above its threshold with at most the
    comparison's false-alarm probability."""

    rows: int
    by_feature: Mapping[str, float]


def noise_thresholds(
    resampled: Sequence[Sequence[FeatureDrift]], rows: int, false_alarm_rate: float
) -> NoiseThresholds:
    """Each feature's threshold from the max-T critical value of the resampled distances (one
    sequence per resample). A feature a resample did not measure counts as distance 0."""
    features = sorted({d.feature for distances in resampled for d in distances})
    by_resample = [{d.feature: d.value for d in distances} for distances in resampled]
    values = np.array([[distances.get(f, 0.0) for f in features] for distances in by_resample])
    mean, spread = values.mean(axis=0), values.std(axis=0)
    standardized = np.divide(values - mean, spread, out=np.zeros_like(values), where=spread > 0)
    maxima = np.sort(standardized.max(axis=1))
    critical = maxima[len(maxima) - allowed_exceedances(false_alarm_rate, len(maxima))]
    return NoiseThresholds(rows, dict(zip(features, (mean + critical * spread).tolist())))


def skew_noise(
    reference: ParametricReference,
    rows: int,
    resamples: int,
    false_alarm_rate: float,
    random: np.random.Generator,
    statistics: Callable[[Iterable[pd.DataFrame]], Iterable[Statistics]],
    skew: Callable[[Statistics], Sequence[FeatureDrift]],
) -> NoiseThresholds:
    """Noise thresholds of the skew comparison: `skew` (the distances from the training
    statistics) of `resamples` windows of `rows` rows drawn from the reference.

    `statistics` gives the statistics of each window it is given, in order."""
    windows = (reference.draw(rows, random) for _ in range(resamples))
    resampled = [skew(window_statistics) for window_statistics in statistics(windows)]
    return noise_thresholds(resampled, rows, false_alarm_rate)


def drift_noise(
    previous: pd.DataFrame,
    current: pd.DataFrame,
    resamples: int,
    false_alarm_rate: float,
    random: np.random.Generator,
    statistics: Callable[[Iterable[pd.DataFrame]], Iterable[Statistics]],
    drift: Callable[[Statistics, Statistics], Sequence[FeatureDrift]],
) -> NoiseThresholds:
    """Noise thresholds of the drift comparison by permutation: `drift` between the two parts
    of `resamples` random splits of the two windows' pooled rows, one part as large as `current`.

    `statistics` gives the statistics of each window it is given, in order."""
    pooled = pd.concat([current, previous], ignore_index=True)

    def splits() -> Iterator[pd.DataFrame]:
        for _ in range(resamples):
            order = random.permutation(len(pooled))
            for part in np.split(order, [len(current)]):
                yield pooled.iloc[part].reset_index(drop=True)

    parts = iter(statistics(splits()))
    resampled = [drift(first, second) for first, second in zip(parts, parts)]
    return noise_thresholds(resampled, len(current), false_alarm_rate)


class ParametricReference:
    """Windows drawn from the distribution a dataset's TFDV statistics describe: a parametric
    bootstrap. The measures compare one feature at a time, so features are drawn
    independently, each present in as large a share of rows as in the statistics:

    - a categorical feature's values by their counts in its rank histogram (what L-infinity compares);
    - a numeric feature's from a piecewise-uniform density fitted to both of TFDV's
      histograms (`numeric_pieces`).

    The statistics do not say which values a numeric feature repeats between their bucket
    boundaries (hourly weather, seats and route distances take a few dozen distinct
    values), and repeated values move Jensen-Shannon more than spread ones, so the noise
    drawn here is lighter than real noise for such features: windows of 200 rows resampled
    from 2,400 January training rows reach, at their 99th percentile, 0.113 for distance
    (0.057 drawn here), 0.211 for seats (0.146), 0.145 for wind_gust (0.128), 0.047 for
    temp (0.039); on windows nearly as large as the reference, where noise is that small,
    humid's 95th percentile at 2000 rows is 0.011 (0.004 drawn here), far below any
    configured threshold, which a feature must pass as well.
    """

    def __init__(self, statistics: Statistics, schema: schema_pb2.Schema, features: Sequence[str]):
        dataset = statistics.datasets[0]
        types = {f.name: f.type for f in schema.feature}
        self._draws: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {}
        self._present: dict[str, float] = {}
        self._integer: set[str] = set()
        for feature in dataset.features:
            name = ".".join(feature.path.step)
            if name not in features:
                continue
            kind = feature.WhichOneof("stats")
            common = getattr(feature, kind).common_stats if kind in ("string_stats", "num_stats") else None
            if common is None or not common.num_non_missing:
                continue  # nothing to draw from
            if kind == "string_stats":
                buckets = feature.string_stats.rank_histogram.buckets
                labels = np.array([b.label for b in buckets], dtype=object)
                counts = np.array([b.sample_count for b in buckets], dtype=float)
                if types.get(name) == schema_pb2.INT:
                    labels = labels.astype(np.int64)
                self._draws[name] = _sampler(labels, counts)
            else:
                self._draws[name] = _piecewise_uniform(*numeric_pieces(feature.num_stats))
            self._present[name] = common.num_non_missing / dataset.num_examples
            if types.get(name) == schema_pb2.INT:
                self._integer.add(name)

    def draw(self, rows: int, random: np.random.Generator) -> pd.DataFrame:
        """`rows` rows, typed as TFDV typed the reference's columns (integers, floats or strings)."""
        columns = {}
        for name, draw in self._draws.items():
            values = pd.Series(draw(rows, random))
            if name in self._integer:
                values = values.round().astype("Int64")
            columns[name] = values.mask(random.random(rows) >= self._present[name])
        return pd.DataFrame(columns)


def numeric_pieces(statistics: statistics_pb2.NumericStatistics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A numeric feature's distribution as pieces (low, high, probability), uniform within
    each; a piece with low == high is a point mass.

    TFDV keeps two histograms (of 10 buckets by default): equal-width (STANDARD, the one
    Jensen-Shannon compares) and equal-mass (QUANTILES), whose zero-width buckets are
    values many rows share (no rain, the highest visibility). Neither alone resamples like
    the data: the standard one spreads those values over its bucket, and their absence
    moves Jensen-Shannon a lot on small windows (precip at 200 rows: a mean of 0.07 drawn
    from the quantiles histogram alone, 0.37 in real resamples); the quantiles one is
    coarse where values are sparse. So the density is uniform between all boundaries of
    both, scaled by iterative proportional fitting until each bucket of each histogram
    holds its count, beside the quantiles' point masses (taken out of the standard bucket
    holding them).
    """
    standard = _buckets(statistics, statistics_pb2.Histogram.STANDARD)
    quantiles = _buckets(statistics, statistics_pb2.Histogram.QUANTILES)
    points: dict[float, float] = {}
    for bucket_low, bucket_high, count in quantiles:
        if bucket_low == bucket_high:
            points[bucket_low] = points.get(bucket_low, 0.0) + count
    edges = np.unique([bound for bucket in standard + quantiles for bound in bucket[:2]])
    starts, ends = edges[:-1], edges[1:]
    mass = ends - starts  # uniform, to start from
    standard_counts = [count for _, _, count in standard]
    for point, count in points.items():
        holder = min(int(np.searchsorted([high for _, high, _ in standard], point)), len(standard) - 1)
        standard_counts[holder] = max(standard_counts[holder] - count, 0.0)
    buckets = [(low, high, count) for (low, high, _), count in zip(standard, standard_counts)] + quantiles
    fitted = [((starts >= low) & (ends <= high), count) for low, high, count in buckets if low < high]
    for _ in range(FITTING_ROUNDS):
        for inside, count in fitted:
            total = mass[inside].sum()
            if total > 0:
                mass[inside] *= count / total
    point_values = np.array(list(points), dtype=float)
    pieces = np.concatenate([mass, list(points.values())])
    return np.concatenate([starts, point_values]), np.concatenate([ends, point_values]), pieces / pieces.sum()


def _buckets(
    statistics: statistics_pb2.NumericStatistics, kind: statistics_pb2.Histogram.HistogramType
) -> list[tuple[float, float, float]]:
    """The finite buckets (low, high, count) of the histogram of that kind."""
    histogram = next((h for h in statistics.histograms if h.type == kind), statistics_pb2.Histogram())
    return [
        (b.low_value, b.high_value, b.sample_count)
        for b in histogram.buckets
        if math.isfinite(b.low_value) and math.isfinite(b.high_value)
    ]


def _sampler(values: np.ndarray, counts: np.ndarray) -> Callable[[int, np.random.Generator], np.ndarray]:
    probability = counts / counts.sum()
    return lambda rows, random: values[random.choice(len(values), rows, p=probability)]


def _piecewise_uniform(
    low: np.ndarray, high: np.ndarray, probability: np.ndarray
) -> Callable[[int, np.random.Generator], np.ndarray]:
    def draw(rows: int, random: np.random.Generator) -> np.ndarray:
        piece = random.choice(len(probability), rows, p=probability)
        return low[piece] + (high[piece] - low[piece]) * random.random(rows)

    return draw
