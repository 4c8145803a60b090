"""Five-field cron expressions (minute hour day-of-month month day-of-week), as Kubernetes CronJobs read them.

Fields take `*`, numbers, ranges `a-b`, lists `a,b` and steps `*/n` or `a-b/n`; day of
week counts Sunday as 0 (7 is Sunday too). As in cron, when both day fields are
restricted a time matches if either matches.
"""

from __future__ import annotations

import dataclasses
import datetime

from components.common.errors import ConfigError

FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


@dataclasses.dataclass(frozen=True)
class Cron:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    def matches(self, moment: datetime.datetime) -> bool:
        if moment.minute not in self.minutes or moment.hour not in self.hours or moment.month not in self.months:
            return False
        day = moment.day in self.days
        weekday = (moment.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return day and weekday
        return day or weekday


def parse_cron(expression: str) -> Cron:
    """Parses a cron expression.

    Raises:
        ConfigError: naming the field and the part that is wrong.
    """
    parts = expression.split()
    if len(parts) != 5:
        raise ConfigError(f"cron {expression!r}: expected 5 fields (minute hour day-of-month month day-of-week)")
    values = [_field(expression, part, name, low, high) for part, (name, low, high) in zip(parts, FIELDS)]
    weekdays = frozenset(d % 7 for d in values[4])
    return Cron(expression, *values[:4], weekdays, any_day=parts[2] == "*", any_weekday=parts[4] == "*")


def _field(expression: str, text: str, name: str, low: int, high: int) -> frozenset[int]:
    found: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if base == "*":
                start, end = low, high
            elif "-" in base:
                start, end = (int(v) for v in base.split("-", 1))
            else:
                start = end = int(base)
        except ValueError:
            raise ConfigError(
                f"cron {expression!r}: {name} field {text!r} is not a number, range, list or step"
            ) from None
        if step < 1 or not low <= start <= end <= high:
            raise ConfigError(f"cron {expression!r}: {name} field {text!r} is outside {low}-{high}")
        found.update(range(start, end + 1, step))
    return frozenset(found)
