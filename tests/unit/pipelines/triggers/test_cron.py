import datetime

import pytest

from pipelines.triggers.cron import parse_cron


def at(text):
    return datetime.datetime.fromisoformat(text)


def test_daily_at_a_fixed_time():
    cron = parse_cron("30 6 * * *")
    assert cron.matches(at("2013-03-04T06:30"))
    assert not cron.matches(at("2013-03-04T06:31")) and not cron.matches(at("2013-03-04T07:30"))


def test_steps_ranges_and_lists():
    cron = parse_cron("*/15 9-17 * * 1-5")
    assert cron.matches(at("2013-03-04T09:45"))  # a Monday
    assert not cron.matches(at("2013-03-03T09:45"))  # a Sunday
    assert not cron.matches(at("2013-03-04T18:00"))
    assert parse_cron("0 0 1,15 * *").matches(at("2013-03-15T00:00"))


def test_either_day_field_matches_when_both_are_restricted():
    cron = parse_cron("0 0 13 * 5")  # the 13th, or any Friday
    assert cron.matches(at("2013-09-13T00:00")) and cron.matches(at("2013-09-06T00:00"))
    assert not cron.matches(at("2013-09-07T00:00"))


def test_sunday_is_0_and_7():
    assert parse_cron("0 0 * * 7").matches(at("2013-03-03T00:00"))
    assert parse_cron("0 0 * * 0").matches(at("2013-03-03T00:00"))


@pytest.mark.parametrize(
    "expression, message",
    [
        ("* * * *", "expected 5 fields"),
        ("61 * * * *", "minute field '61' is outside 0-59"),
        ("* * * 13 *", "month field '13' is outside 1-12"),
        ("*/0 * * * *", "minute field '\\*/0' is outside"),
        ("a * * * *", "minute field 'a' is not a number"),
    ],
)
def test_bad_expressions_name_the_field(expression, message):
    with pytest.raises(ValueError, match=message):
        parse_cron(expression)
