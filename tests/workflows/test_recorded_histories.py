"""Order, transfer and settlement workflows recorded by earlier versions of the code
(``histories/``, written by ``record_histories.py`` and ``record_backoffice_histories.py``)
replay under the current workflow code without a nondeterminism error: a worker that restarts
under new code mid-workflow resumes these exactly where they were. The replays run through
:func:`tests.workflows.replay.replay_past_the_import_race` (an SDK flake on CPython 3.11)."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from sherwood.temporal import DATA_CONVERTER
from tests.workflows.replay import IMPORT_RACE_ATTEMPTS, replay_past_the_import_race
from workflows.deposit import DepositWorkflow
from workflows.order import OrderWorkflow
from workflows.order_group import OrderGroupWorkflow
from workflows.rebalance import RebalanceWorkflow
from workflows.settlement import LedgerReconciliationWorkflow, SettlementWorkflow
from workflows.withdrawal import WithdrawalWorkflow

WORKFLOWS = [OrderWorkflow, OrderGroupWorkflow, DepositWorkflow, WithdrawalWorkflow, SettlementWorkflow,
             LedgerReconciliationWorkflow, RebalanceWorkflow]
HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_recorded_histories() -> None:
    assert len(HISTORIES) >= 10, HISTORIES


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replay_past_the_import_race(
        lambda: Replayer(workflows=WORKFLOWS, data_converter=DATA_CONVERTER).replay_workflow(
            history, raise_on_replay_failure=False))
    assert result.replay_failure is None, result.replay_failure


def _race(attempts: list[str]) -> RuntimeError:
    attempts.append("race")
    err = RuntimeError("Failed validating workflow Withdrawal")
    err.__cause__ = KeyError(threading.get_ident())
    return err


async def test_only_the_sdk_import_race_is_tried_again_and_without_the_collector() -> None:
    attempts: list[str] = []
    collecting: list[bool] = []

    async def once_racing() -> str:
        collecting.append(gc.isenabled())
        if not attempts:
            raise _race(attempts)
        return "replayed"

    assert await replay_past_the_import_race(once_racing) == "replayed"
    assert attempts == ["race"] and collecting == [False, False] and gc.isenabled()

    async def always_racing() -> str:
        raise _race(attempts)

    attempts.clear()
    with pytest.raises(RuntimeError, match="Failed validating"):
        await replay_past_the_import_race(always_racing)
    assert len(attempts) == IMPORT_RACE_ATTEMPTS and gc.isenabled()

    async def really_invalid() -> str:  # any other failure fails at once
        attempts.append("invalid")
        raise RuntimeError("Failed validating workflow Withdrawal") from KeyError("other")

    attempts.clear()
    with pytest.raises(RuntimeError, match="Failed validating"):
        await replay_past_the_import_race(really_invalid)
    assert attempts == ["invalid"] and gc.isenabled()
