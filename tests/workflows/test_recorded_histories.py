"""Order, transfer and settlement workflows recorded by earlier versions of the code
(``histories/``, written by ``record_histories.py`` and ``record_backoffice_histories.py``)
replay under the current workflow code without a nondeterminism error: a worker that restarts
under new code mid-workflow resumes these exactly where they were."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from sherwood.temporal import DATA_CONVERTER
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
    result = await Replayer(workflows=WORKFLOWS, data_converter=DATA_CONVERTER).replay_workflow(
        history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
