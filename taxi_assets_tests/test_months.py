"""The one month type: parsing ``YYYY-MM`` strictly, arithmetic across years, ranges."""

from datetime import datetime

import pytest

from taxi_assets.months import Month, months_between


def test_a_month_is_its_key_and_its_half_open_range():
    month = Month.parse("2020-12")
    assert (month.key, month.start, month.end) == ("2020-12", datetime(2020, 12, 1), datetime(2021, 1, 1))
    assert (month.year, month.month) == (2020, 12)


@pytest.mark.parametrize("text", ["2021-1", "2021-13", "2021-00", "21-01", "2021/01", "2021-01-01", "", "abcd-ef"])
def test_anything_but_yyyy_mm_is_an_error_naming_it(text):
    with pytest.raises(ValueError, match=f"malformed month {text!r} \\(expected YYYY-MM"):
        Month.parse(text)


def test_shifting_crosses_years_both_ways():
    assert Month.parse("2021-11").shifted(3).key == "2022-02"
    assert Month.parse("2021-02").shifted(-3).key == "2020-11"
    assert Month.parse("2019-01").shifted(0) == Month.parse("2019-01")


def test_months_between_includes_both_ends_and_is_empty_when_reversed():
    assert months_between("2020-11", "2021-02") == ["2020-11", "2020-12", "2021-01", "2021-02"]
    assert months_between("2021-02", "2021-02") == ["2021-02"]
    assert months_between("2021-03", "2021-02") == []
