"""The chaos run: orders through a whole ``sherwood dev`` stack while its processes are killed.

``python -m bench.chaos [--orders 500] [--seed 1] [--shards 4]`` starts its own ``sherwood dev``
(embedded Postgres, Redis and Temporal; loopback only; a scratch data dir; whatever
SHERWOOD_* the environment has is ignored), opens ``--accounts`` funded accounts (the code of
``sherwood accounts create``), switches the simulated market makers' faults on (partial fills,
delay, duplicate and PossResend reports; for a few seconds each at a random moment: one venue
drops order messages, one disconnects after an ack; ``simulators/venue_faults.py``), and places
``--orders`` orders (market and limit, buys and sells, some canceled) from ``--concurrency``
clients, retrying 504, 503, 429 and lost connections with the same ``client_order_id``.
Meanwhile, at random moments drawn from ``--seed`` (by how many orders were placed), it kills
each of the shard worker, the execution gateway, the API, a venue and Redis with SIGKILL, the
Temporal dev server with SIGKILL and the embedded Postgres with SIGINT (its fast shutdown), the
pid taken from ``stack.json``; ``sherwood dev``'s supervisor starts each again.

Then it waits until the stack is quiet (every order terminal or STUCK and every venue fill
booked, at most ``--quiesce-timeout`` s) and checks (:mod:`bench.chaos_checks`): every order
terminal or STUCK (the STUCK ones listed), each fill in a venue's own record booked exactly
once and nothing booked that no venue sent, ``sherwood audit invariants`` clean, no hold left on
a terminal order, every child running again. It prints JSON lines (orders by final state, API
answers, kills per kind, faults, fills booked vs venue fills, invariant violations, seconds to
quiesce, and ``result`` with ``ok``) and exits 1 when a check fails (2 when the stack does not
start). ``--keep`` leaves the data dir (logs, venue stores) for a post-mortem; its path is in
the first line.

What it does not do: run against an existing stack, kill the back office, ingest, fan-out or
the feed (they are not on the order path), or resolve STUCK orders (an operator's work).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from bench.chaos_checks import check_fills, read_books, venue_fills
from sherwood.embedded import free_port
from sherwood.processes import spawn, stop_processes
from simulators.venue_faults import write_faults

SYMBOLS = {"AAPL": Decimal("187.50"), "MSFT": Decimal("415.20"), "AMZN": Decimal("181.10")}
VENUES = ("MM1", "MM2")
# kind -> (child name(s) in stack.json, signal)
KILLS: dict[str, tuple[tuple[str, ...], signal.Signals]] = {
    "shard-worker": (("shard-worker",), signal.SIGKILL), "gateway": (("gateway",), signal.SIGKILL),
    "api": (("api",), signal.SIGKILL), "venue": (("mm1", "mm2"), signal.SIGKILL),
    "redis": (("redis",), signal.SIGKILL), "temporal": (("temporal",), signal.SIGKILL),
    "postgres": (("postgres",), signal.SIGINT)}
BASE_FAULTS: dict[str, Any] = {"fill_slices": [2, 3], "fill_delay": 0.2, "latency": 0.02,
                               "duplicate_reports": True, "possresend_old": True}
RETRY = {429, 502, 503, 504}  # and no answer at all: the same client_order_id again


def emit(kind: str, **fields: Any) -> None:
    print(json.dumps({"bench": "chaos", "kind": kind, **fields}, default=str), flush=True)


@dataclass
class Plan:
    """One order, decided up front from the seed."""

    i: int
    account: int
    body: dict[str, str]
    cancel_after: float | None


def plan_orders(rng: random.Random, n: int, accounts: int, seed: int) -> list[Plan]:
    plans = []
    for i in range(n):
        symbol = rng.choice(list(SYMBOLS))
        side = "buy" if rng.random() < 0.65 else "sell"
        market = rng.random() < 0.45
        body = {"symbol": symbol, "qty": str(rng.randint(1, 8)), "side": side,
                "type": "market" if market else "limit", "time_in_force": "day",
                "client_order_id": f"chaos-{seed}-{i}"}
        if not market:
            body["limit_price"] = str((SYMBOLS[symbol] * Decimal(rng.uniform(0.97, 1.03)))
                                      .quantize(Decimal("0.01")))
        cancel = rng.random() < (0.1 if market else 0.3)
        plans.append(Plan(i, i % accounts, body, rng.uniform(0, 2) if cancel else None))
    return plans


@dataclass
class Tally:
    answers: Counter[str] = field(default_factory=Counter)  # final API answer per order
    retries: Counter[str] = field(default_factory=Counter)  # why a POST/DELETE was sent again
    cancels: Counter[str] = field(default_factory=Counter)
    placed: int = 0  # orders whose POST got a final answer
    kills: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)


class Chaos:
    def __init__(self, args: argparse.Namespace, data: Path) -> None:
        self.args = args
        self.data = data
        self.rng = random.Random(args.seed)
        self.tally = Tally()
        self.api_port = free_port()
        self.env = self._env()
        self.proc: subprocess.Popen[bytes] | None = None
        self.accounts: list[dict[str, Any]] = []

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHERWOOD_")}
        ports = ("TEMPORAL_PORT", "TEMPORAL_UI_PORT", "EMBEDDED_PG_PORT", "EMBEDDED_REDIS_PORT",
                 "GATEWAY_LINK_PORT", "FANOUT_PORT", "MARKETDATA_FEED_PORT")
        env.update({f"SHERWOOD_{p}": str(free_port()) for p in ports})
        env.update({
            "SHERWOOD_DATA_DIR": str(self.data), "SHERWOOD_BIND_HOST": "127.0.0.1",
            "SHERWOOD_API_PORT": str(self.api_port),
            "SHERWOOD_DEV_VENUE_PORTS": json.dumps([free_port() for _ in VENUES]),
            "SHERWOOD_ENFORCE_MARKET_HOURS": "false", "SHERWOOD_EXCHANGE_FEED_RATE": "100",
            # bounded: an unanswered order is chased within seconds, a resting one expires
            "SHERWOOD_VENUE_ACK_TIMEOUT_S": "5", "SHERWOOD_VENUE_CANCEL_TIMEOUT_S": "3",
            "SHERWOOD_VENUE_STATUS_TIMEOUT_S": "3", "SHERWOOD_DAY_ORDER_TTL_S": str(self.args.order_ttl),
            "SHERWOOD_DEV_RESTART_BACKOFF_INITIAL_S": "0.2", "SHERWOOD_DEV_RESTART_BACKOFF_MAX_S": "2",
            "SHERWOOD_ORDER_RATE_PER_S": "50"})
        return env

    # ------------------------------------------------------------------ the stack
    def start_stack(self) -> None:
        for venue in VENUES:
            write_faults(self.data / "venues" / venue, BASE_FAULTS)
        log = open(self.data / "dev.log", "ab")
        self.proc = spawn([sys.executable, "-m", "sherwood", "dev", "--shards", str(self.args.shards)],
                          env=self.env, stdout=log)
        deadline = time.monotonic() + self.args.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sherwood dev exited {self.proc.returncode}; see {self.data}/dev.log")
            if (self.data / "stack.json").exists() and self.healthy():
                return
            time.sleep(0.5)
        raise RuntimeError(f"sherwood dev not healthy in {self.args.start_timeout} s; see {self.data}")

    def healthy(self) -> bool:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.api_port}/healthz", params={"workers": "true"},
                          timeout=5)
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    def stop_stack(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_processes([(self.proc, signal.SIGINT)], 60)

    def stack(self) -> dict[str, Any]:
        info: dict[str, Any] = json.loads((self.data / "stack.json").read_text())
        return info

    def children(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.stack()["children"]}

    def open_accounts(self) -> None:
        """``sherwood accounts create --deposit ...``'s code, all at once in this process."""
        from sherwood.cli_accounts import _open_account
        from sherwood.cli_common import Clients, run
        from sherwood.settings import Settings

        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)
        try:
            settings = Settings().resolved()
        finally:
            os.environ.clear()
            os.environ.update(saved)

        async def go(c: Clients) -> list[dict[str, object]]:
            return [await _open_account(c, "cash", Decimal(self.args.deposit))
                    for _ in range(self.args.accounts)]

        self.accounts = run(go, settings)

    # ------------------------------------------------------------------ orders
    async def place(self, http: httpx.AsyncClient, plan: Plan) -> None:
        acct = self.accounts[plan.account]
        headers = {"APCA-API-KEY-ID": str(acct["key_id"]), "APCA-API-SECRET-KEY": str(acct["secret_key"])}
        deadline = time.monotonic() + self.args.order_timeout
        order: dict[str, Any] | None = None
        errors_500 = 0
        while True:
            try:
                r = await http.post("/v2/orders", json=plan.body, headers=headers)
            except httpx.HTTPError as exc:
                why = f"no_answer:{type(exc).__name__}"
            else:
                if r.status_code == 200:
                    order = r.json()
                    self.tally.answers["accepted"] += 1
                    break
                reason = r.json().get("reason", "?") if r.headers.get("content-type", "").startswith(
                    "application/json") else "?"
                why = f"{r.status_code}:{reason}"
                if r.status_code not in RETRY and not (r.status_code == 500 and errors_500 < 3):
                    self.tally.answers[why] += 1
                    break
                errors_500 += r.status_code == 500
            self.tally.retries[why] += 1
            if time.monotonic() > deadline:
                self.tally.answers[f"gave_up:{why}"] += 1
                break
            await asyncio.sleep(0.5)
        self.tally.placed += 1
        if order is None or plan.cancel_after is None:
            return
        await asyncio.sleep(plan.cancel_after)
        while True:
            try:
                r = await http.delete(f"/v2/orders/{order['id']}", headers=headers)
            except httpx.HTTPError as exc:
                why = f"no_answer:{type(exc).__name__}"
            else:
                if r.status_code not in RETRY and r.status_code < 500:
                    self.tally.cancels[str(r.status_code)] += 1
                    return
                why = f"cancel {r.status_code}"
            self.tally.retries[why] += 1
            if time.monotonic() > deadline + 60:
                self.tally.cancels[f"gave_up:{why}"] += 1
                return
            await asyncio.sleep(0.5)

    async def drive(self, plans: list[Plan]) -> None:
        queue: asyncio.Queue[Plan] = asyncio.Queue()
        for p in plans:
            queue.put_nowait(p)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.api_port}", timeout=15,
                                     limits=httpx.Limits(max_connections=self.args.concurrency + 4)) as http:
            async def client() -> None:
                while not queue.empty():
                    await self.place(http, queue.get_nowait())

            await asyncio.gather(*(client() for _ in range(self.args.concurrency)))

    # ------------------------------------------------------------------ chaos
    def schedule(self) -> list[tuple[int, str, str]]:
        """(orders placed, what, which): each kill kind ``--rounds`` times, and the two timed
        venue faults, at positions drawn from the seed within 10-85% of the run."""
        n = self.args.orders
        events = []
        for kind, (names, _) in KILLS.items():
            for _ in range(self.args.rounds):
                at = int(n * self.rng.uniform(0.1, 0.85))
                events.append((at, "kill", f"{kind}/{self.rng.choice(names)}"))
        for fault in ("drop", "disconnect"):
            at = int(n * self.rng.uniform(0.1, 0.85))
            events.append((at, "fault", f"{fault}/{self.rng.choice(VENUES)}"))
        return sorted(events)

    async def chaos(self, events: list[tuple[int, str, str]], done: asyncio.Event) -> None:
        t0 = time.monotonic()
        for at, what, which in events:
            while self.tally.placed < at and not done.is_set():
                await asyncio.sleep(0.1)
            await asyncio.sleep(self.rng.uniform(0, 1))
            if what == "kill":
                await self.kill(*which.split("/"), t0=t0)
            else:
                await self.fault(*which.split("/"), t0=t0)

    async def kill(self, kind: str, name: str, *, t0: float) -> None:
        sig = KILLS[kind][1]
        deadline = time.monotonic() + 120
        while True:  # a child still in its restart backoff has no pid yet
            child = self.children().get(name, {})
            if child.get("state") == "running" and child.get("pid"):
                break
            if time.monotonic() > deadline:
                self.tally.kills.append({"kind": kind, "name": name, "skipped": "never running"})
                return
            await asyncio.sleep(0.2)
        os.kill(child["pid"], sig)
        self.tally.kills.append({"kind": kind, "name": name, "pid": child["pid"], "signal": sig.name,
                                 "at_s": round(time.monotonic() - t0, 1), "placed": self.tally.placed})

    async def fault(self, fault: str, venue: str, *, t0: float) -> None:
        switch = {"drop": "never_ack", "disconnect": "drop_connection_after_ack"}[fault]
        where = self.data / "venues" / venue
        write_faults(where, {**BASE_FAULTS, switch: True})
        self.tally.faults.append({"fault": fault, "venue": venue, "at_s": round(time.monotonic() - t0, 1),
                                  "for_s": self.args.fault_seconds})
        await asyncio.sleep(self.args.fault_seconds)
        write_faults(where, BASE_FAULTS)

    # ------------------------------------------------------------------ the end
    def quiesce(self) -> tuple[float, bool]:
        """Seconds until every order is terminal or STUCK and every venue fill is booked."""
        t0 = time.monotonic()
        urls = self.stack()["shard_urls"]
        while True:
            try:
                books = read_books(urls)
                fills = venue_fills(self.data / "venues")
                quiet = not books.open_orders() and all(k in books.booked for k in fills)
            except Exception:  # Postgres may still be restarting
                quiet = False
            if quiet:
                return time.monotonic() - t0, True
            if time.monotonic() - t0 > self.args.quiesce_timeout:
                return time.monotonic() - t0, False
            time.sleep(1)

    def audit(self) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-m", "sherwood", "audit", "invariants", "--json",
                              "--data-dir", str(self.data)], env=self.env, capture_output=True,
                             text=True, timeout=300)
        try:
            report: dict[str, Any] = json.loads(out.stdout)
        except json.JSONDecodeError:
            return {"ok": False, "violations": -1, "error": (out.stderr or out.stdout)[-2000:]}
        violations = [{"shard": shard, "invariant": name, "count": v["count"], "rows": v["rows"][:5]}
                      for shard, r in report["shards"].items()
                      for name, v in r["invariants"].items() if not v["ok"]]
        return {"ok": report["ok"] and out.returncode == 0,
                "violations": sum(int(v["count"]) for v in violations), "details": violations}


async def run(args: argparse.Namespace, data: Path) -> bool:
    chaos = Chaos(args, data)
    emit("start", data_dir=str(data), orders=args.orders, seed=args.seed, shards=args.shards,
         accounts=args.accounts, concurrency=args.concurrency)
    t_start = time.monotonic()
    try:
        await asyncio.to_thread(chaos.start_stack)
    except RuntimeError as exc:
        emit("result", ok=False, error=str(exc))
        chaos.stop_stack()
        raise SystemExit(2) from exc
    try:
        await asyncio.to_thread(chaos.open_accounts)
        events = chaos.schedule()
        plans = plan_orders(chaos.rng, args.orders, args.accounts, args.seed)
        done = asyncio.Event()
        t0 = time.monotonic()
        chaos_task = asyncio.create_task(chaos.chaos(events, done))
        await chaos.drive(plans)
        done.set()
        await chaos_task  # events due after the last order happen now
        placing = time.monotonic() - t0
        for venue in VENUES:  # the timed faults are over; the base ones stay on
            write_faults(data / "venues" / venue, BASE_FAULTS)
        seconds, quiet = await asyncio.to_thread(chaos.quiesce)
        books = await asyncio.to_thread(read_books, chaos.stack()["shard_urls"])
        fills = await asyncio.to_thread(venue_fills, data / "venues")
        fill_check = check_fills(fills, books)
        audit = await asyncio.to_thread(chaos.audit)
        children = chaos.children()
        t = chaos.tally
        emit("orders", placed=len(plans), by_state=dict(sorted(books.states().items())),
             api_answers=dict(t.answers), retries=dict(t.retries), cancels=dict(t.cancels),
             seconds_placing=round(placing, 1))
        emit("kills", per_kind=dict(Counter(k["kind"] for k in t.kills if "pid" in k)), events=t.kills,
             restarts={n: c["restarts"] for n, c in children.items()})
        emit("faults", base=BASE_FAULTS, timed=t.faults)
        stuck = books.stuck()
        emit("stuck", count=len(stuck), orders=[{k: o[k] for k in (
            "id", "shard", "symbol", "side", "type", "qty", "filled_qty", "venue", "hold_amount")}
            for o in stuck])
        open_orders = books.open_orders()
        if open_orders:
            emit("not_terminal", count=len(open_orders), orders=open_orders[:20])
        emit("fills", venue_fills=fill_check.venue_fills, booked=fill_check.booked,
             missing=fill_check.missing[:20], extra=fill_check.extra[:20],
             mismatched=fill_check.mismatched[:20], order_qty_mismatch=fill_check.per_order_mismatch[:20])
        holds = books.holds_on_terminal()
        emit("holds", on_terminal_orders=len(holds), orders=holds[:20])
        emit("invariants", violations=audit["violations"], details=audit.get("details") or audit.get("error"))
        down = {n: c["state"] for n, c in children.items() if c["state"] != "running"}
        checks = {"quiesced": quiet and not open_orders, "fills_booked_once": fill_check.ok,
                  "invariants_clean": bool(audit["ok"]), "no_hold_on_terminal": not holds,
                  "every_child_running": not down, "every_kill_done": all("pid" in k for k in t.kills)}
        ok = all(checks.values())
        emit("result", ok=ok, checks=checks, stuck=len(stuck), seconds_to_quiesce=round(seconds, 1),
             seconds_total=round(time.monotonic() - t_start, 1), children_down=down)
        return ok
    except Exception as exc:  # the run itself broke: say so in the last line, trace on stderr
        import traceback

        traceback.print_exc()
        emit("result", ok=False, error=f"{type(exc).__name__}: {exc}",
             seconds_total=round(time.monotonic() - t_start, 1))
        return False
    finally:
        await asyncio.to_thread(chaos.stop_stack)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--deposit", default="1000000")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="Kills of each kind.")
    parser.add_argument("--fault-seconds", type=float, default=3.0,
                        help="How long the drop and disconnect faults stay on.")
    parser.add_argument("--order-ttl", type=float, default=15.0,
                        help="Seconds a resting DAY order lives (SHERWOOD_DAY_ORDER_TTL_S).")
    parser.add_argument("--order-timeout", type=float, default=180.0,
                        help="Seconds a client keeps retrying one order.")
    parser.add_argument("--start-timeout", type=float, default=240.0)
    parser.add_argument("--quiesce-timeout", type=float, default=300.0)
    parser.add_argument("--data-dir", type=Path, default=None, help="Default: a new temp dir.")
    parser.add_argument("--keep", action="store_true", help="Keep the data dir (logs, venue stores).")
    args = parser.parse_args(argv)
    data = args.data_dir or Path(tempfile.mkdtemp(prefix="sherwood-chaos-"))
    data.mkdir(parents=True, exist_ok=True)
    ok = False
    try:
        ok = asyncio.run(run(args, data))
    finally:
        if not args.keep and args.data_dir is None:
            shutil.rmtree(data, ignore_errors=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
