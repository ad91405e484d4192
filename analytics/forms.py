"""The dashboard's choice of period: one of the usual ones, or a range of days."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms

from analytics.stats import Period

PERIODS = {"1": "last 24 hours", "7": "last 7 days", "30": "last 30 days", "90": "last 90 days"}
DEFAULT_DAYS = "7"
LONGEST_RANGE_DAYS = 366  # a chart of a year, by day


class PeriodForm(forms.Form):
    """``days`` (one of :data:`PERIODS`) or ``start`` and ``end`` (days, both included, UTC)."""

    days = forms.ChoiceField(choices=list(PERIODS.items()), required=False)
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start is None and end is None:
            return data
        if start is None or end is None:
            raise forms.ValidationError("A range needs both its first and its last day.")
        if start > end:
            raise forms.ValidationError("The first day comes after the last.")
        if end > date.today() + timedelta(days=LONGEST_RANGE_DAYS):
            raise forms.ValidationError("The last day is too far ahead: nothing happened there.")
        if (end - start).days >= LONGEST_RANGE_DAYS:
            raise forms.ValidationError(f"A range is at most {LONGEST_RANGE_DAYS} days long.")
        return data

    def period(self) -> tuple[Period, str, str]:
        """The period asked for (the default one when the form is not valid), a label for it,
        and its query string (for the CSV link)."""
        data = self.cleaned_data if self.is_valid() else {}
        start: date | None = data.get("start")
        end: date | None = data.get("end")
        if start is not None and end is not None:
            first = datetime.combine(start, time.min, tzinfo=UTC)
            after = datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)
            label = f"{start:%Y-%m-%d} to {end:%Y-%m-%d}"
            return Period(first, after), label, f"start={start:%Y-%m-%d}&end={end:%Y-%m-%d}"
        days = data.get("days") or DEFAULT_DAYS
        return Period.last_days(int(days)), PERIODS[days], f"days={days}"
