"""The isolation forest: decisions unlike the baseline, and the features that make them so.

No model is ever written to disk or read back (a pickle is code): training
records the baseline — which ledger records it covers, the random seed, the
threshold — and scoring fits the same forest again from those records. Fitting
is deterministic for the same rows; people who opted out since, or records
purged since, simply leave the baseline.
"""

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from detectors.features import FEATURE_NAMES

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest

MIN_EVENTS = 50
HIGH_QUANTILE = 0.999


@dataclass(frozen=True)
class Baseline:
    """What a fit is made from and how its scores are read."""

    from_seq: int
    to_seq: int
    events: int
    contamination: float
    threshold: float       # anomaly scores above it open a review item
    high: float            # scores above it are high priority
    random_state: int
    means: tuple[float, ...]
    stds: tuple[float, ...]
    lows: tuple[float, ...]
    highs: tuple[float, ...]
    trained_at: str

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Baseline":
        return cls(**{**data, **{key: tuple(data[key]) for key in ("means", "stds", "lows", "highs")}})


class NotEnoughHistory(Exception):
    """Too few decisions to learn what is usual."""


def fit(matrix: np.ndarray, random_state: int) -> "IsolationForest":
    """An isolation forest fitted to `matrix` (deterministic for the same rows and seed)."""
    # Imported here: scikit-learn (and SciPy under it) take seconds to import, which every `warden`
    # command would pay at start-up, most of them never fitting a forest.
    from sklearn.ensemble import IsolationForest

    return IsolationForest(n_estimators=200, random_state=random_state).fit(matrix)


def anomaly_scores(model: "IsolationForest", matrix: np.ndarray) -> np.ndarray:
    """Higher is stranger (the negated sklearn score, about 0.3–0.8)."""
    return -model.score_samples(matrix) if len(matrix) else np.empty(0)


def train(seqs: list[int], matrix: np.ndarray, *, contamination: float, random_state: int,
          trained_at: str) -> tuple["IsolationForest", Baseline]:
    """Fit the baseline; the threshold flags about `contamination` of the training decisions."""
    if len(seqs) < MIN_EVENTS:
        raise NotEnoughHistory(f"{len(seqs)} decision(s) to learn from; at least {MIN_EVENTS} are needed")
    model = fit(matrix, random_state)
    scores = anomaly_scores(model, matrix)
    return model, Baseline(
        from_seq=min(seqs), to_seq=max(seqs), events=len(seqs), contamination=contamination,
        threshold=float(np.quantile(scores, 1 - contamination)), high=float(np.quantile(scores, HIGH_QUANTILE)),
        random_state=random_state, means=tuple(map(float, matrix.mean(axis=0))),
        stds=tuple(map(float, matrix.std(axis=0))), lows=tuple(map(float, matrix.min(axis=0))),
        highs=tuple(map(float, matrix.max(axis=0))), trained_at=trained_at)


# Counts and sizes, where "far more than ever before" means something. Hours, weekdays and yes/no
# features are left to the forest: a baseline recorded in one afternoon has seen one hour only.
_MAGNITUDES = tuple(FEATURE_NAMES.index(name) for name in (
    "subject_events_1h", "subject_distinct_objects_1h", "subject_denials_1h", "rows_log"))


def beyond(row: np.ndarray, baseline: Baseline) -> list[int]:
    """Indexes of the count features above everything the baseline saw, by more than a standard deviation.

    A forest only splits within the range it was fitted on, so it scores a value far
    beyond that range like the most extreme training value: these are flagged apart.
    """
    return [i for i in _MAGNITUDES if row[i] > baseline.highs[i] + max(baseline.stds[i], 1.0)]


def explain(row: np.ndarray, baseline: Baseline, limit: int = 3) -> list[str]:
    """Why a decision looks unusual: the features furthest from the baseline, in words."""
    outside = set(beyond(row, baseline))
    z = [(i in outside, abs(value - mean) / (std if std > 1e-9 else 1.0), name, value, mean)
         for i, (name, value, mean, std) in enumerate(zip(FEATURE_NAMES, row, baseline.means, baseline.stds))]
    reasons = [_say(name, value, mean) for out, distance, name, value, mean in sorted(z, reverse=True)[:limit]
               if out or distance >= 2]
    return reasons or ["an unusual combination of time, object and activity"]


def _say(name: str, value: float, mean: float) -> str:
    usual = f" (usually {mean:.1f})"
    days = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
    words = {
        "hour": lambda: f"at {int(value):02d}:00 UTC, an unusual hour here",
        "weekday": lambda: f"on a {days[int(value) % 7]}, an unusual day here",
        "off_hours": lambda: "outside working hours (before 07:00 or after 20:00 UTC)" if value
                             else "during working hours",
        "denied": lambda: "denied" if value else "allowed",
        "no_workflow": lambda: "no declared workflow" if value else "a declared workflow",
        "writes": lambda: "a write-type action" if value else "a read-type action",
        "domain_wide_object": lambda: "a wildcard object" if value else "a named object",
        "subject_events_1h": lambda: f"{value:.0f} earlier decisions by this person in the hour before" + usual,
        "subject_distinct_objects_1h": lambda: f"{value:.0f} distinct objects in this person's hour before"
                                               + usual,
        "subject_denials_1h": lambda: f"{value:.0f} denials of this person in the hour before" + usual,
        "new_object_for_subject": lambda: "the first access by this person to this object" if value
                                          else "an object this person uses",
        "rows_log": lambda: f"about {np.expm1(value):,.0f} rows returned (usually about {np.expm1(mean):,.0f})",
    }
    return words[name]()
