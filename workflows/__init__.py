"""Temporal workflows (orders, transfers, settlement, corporate actions).

The package imports the NYSE calendar's libraries (pandas, ``exchange-calendars``) up front,
passed through: ``domain.calendar`` imports them on first use only (so a ``sherwood`` command
that never asks the calendar starts fast), and a first use inside Temporal's sandbox would
otherwise load a second pandas into the sandbox. Every workflow module is in this package, so
the sandbox runs this before any workflow code.

It also puts the modules of the workflows' payload dataclasses in the sandbox's ``sys.modules``:
the payload converter resolves a dataclass's annotations through ``sys.modules[cls.__module__]``,
and a module imported only indirectly (``domain.orders`` re-exports ``domain.order_payloads``)
would be missing there ("name 'Any' is not defined" when decoding a workflow's input).
"""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import domain.order_payloads
    import domain.order_state  # noqa: F401
    from domain import calendar

    calendar.load()
