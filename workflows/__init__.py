"""Temporal workflows (orders, transfers, settlement, corporate actions).

The package imports the NYSE calendar's libraries (pandas, ``exchange-calendars``) up front,
passed through: ``domain.calendar`` imports them on first use only (so a ``sherwood`` command
that never asks the calendar starts fast), and a first use inside Temporal's sandbox would
otherwise load a second pandas into the sandbox. Every workflow module is in this package, so
the sandbox runs this before any workflow code.
"""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain import calendar

    calendar.load()
