"""What a deployment costs and how fast it goes: a calculation from measured CPU per item and
published prices, printed as the README's tuning tables (``python -m benchmarks model``).

Inputs, each stated in the output:

* **CPU per item**: the median client CPU µs/item of the s3ddb case at 10 ms in a results file
  of ``python -m benchmarks run`` (default ``benchmarks/results/s3ddb-repeat.json``: the default
  generated data, ~250-byte rows with a JSON map and two sets). It was measured on this machine
  (x86_64); a Lambda's Graviton core is not the same core: ``--cpu-factor`` scales it (1.2 = 20%
  slower) once a real hop's log (rows, duration) says by how much.
* **Lambda's CPU share**: a function gets CPU in proportion to its memory, one full vCPU at
  1,769 MB (AWS Lambda docs, "Configuring function memory"). One load process uses at most one
  vCPU, so memory above 1,769 MB buys no speed for a single-process hop.
* **Prices**: AWS list prices, us-east-1, as published on 2026-12-07 (``PRICES``); other regions
  differ by a few percent. DynamoDB bills one write unit per item up to 1 KB.

The model ignores what is small next to the items: one S3 GET per hop, one Lambda request per
15-minute hop, the ledger's few writes per hop, and cold starts (~1 s a container).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PRICES",
    "Prices",
    "fleet_rows",
    "lambda_rows",
    "local_ceiling",
    "main",
    "measured_us_per_item",
    "render",
    "write_rows",
]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "s3ddb-repeat.json"

#: memory at which a function has one full vCPU (AWS Lambda docs)
FULL_VCPU_MB = 1769
#: items per BatchWriteItem call
BATCH = 25
#: the default on-demand table throughput quota (write units/s a table may reach without a request)
ON_DEMAND_TABLE_WCU = 40_000
#: what one partition takes (write units/s)
PARTITION_WCU = 1_000


@dataclass(frozen=True, kw_only=True)
class Prices:
    lambda_gb_s_arm64: float
    lambda_gb_s_x86_64: float
    lambda_per_million_requests: float
    ddb_on_demand_per_million_wru: float
    ddb_provisioned_wcu_hour: float
    as_of: str


#: us-east-1 list prices (aws.amazon.com/lambda/pricing, /dynamodb/pricing), standard table class
PRICES = Prices(
    lambda_gb_s_arm64=0.0000133334,
    lambda_gb_s_x86_64=0.0000166667,
    lambda_per_million_requests=0.20,
    ddb_on_demand_per_million_wru=0.625,
    ddb_provisioned_wcu_hour=0.00065,
    as_of="2026-12-07, us-east-1",
)


def measured_us_per_item(path: Path = DEFAULT_RESULTS, *, latency_ms: float = 10.0) -> float:
    """The median client CPU µs/item of the s3ddb case at ``latency_ms`` in a results file."""
    data = json.loads(path.read_text())
    values = [
        float(c["client_cpu_us_per_item"])
        for c in data["cases"]
        if c["name"] == "s3ddb" and float(c["latency_ms"]) == latency_ms and c.get("ok", True)
    ]
    if not values:
        raise ValueError(f"{path}: no s3ddb run at {latency_ms:g} ms")
    return statistics.median(values)


@dataclass(frozen=True, kw_only=True)
class LambdaRow:
    memory_mb: int
    vcpu: float
    #: worker processes a hop runs (``S3DDB_HOP_WORKERS=auto``)
    processes: int
    items_per_s: float
    gb_s_per_million: float
    lambda_usd_per_million: float
    writes_usd_per_million: float

    @property
    def total_usd_per_million(self) -> float:
        return self.lambda_usd_per_million + self.writes_usd_per_million


def lambda_rows(
    us_per_item: float, memories: tuple[int, ...], *, prices: Prices = PRICES, arch: str = "arm64"
) -> list[LambdaRow]:
    """Items/s of one hop and the cost of a million rows (≤ 1 KB each) at each memory size. A hop
    runs the worker processes ``S3DDB_HOP_WORKERS=auto`` gives that memory (``vcpus_for_memory``),
    each at most one vCPU, together the vCPU the memory buys (3,008 MB: two processes on 1.7 vCPU).
    The workers' start-up (a second or two a hop) is left out."""
    from lambda_src.settings import vcpus_for_memory

    per_gb_s = prices.lambda_gb_s_arm64 if arch == "arm64" else prices.lambda_gb_s_x86_64
    rows = []
    for mb in memories:
        processes = vcpus_for_memory(mb)
        share = min(mb / FULL_VCPU_MB, processes)  # each process at most one vCPU, all of them the memory's
        items_per_s = share * 1e6 / us_per_item
        seconds = 1e6 / items_per_s
        gb_s = mb / 1024 * seconds
        rows.append(
            LambdaRow(
                memory_mb=mb,
                vcpu=mb / FULL_VCPU_MB,
                processes=processes,
                items_per_s=items_per_s,
                gb_s_per_million=gb_s,
                lambda_usd_per_million=gb_s * per_gb_s,
                writes_usd_per_million=prices.ddb_on_demand_per_million_wru,
            )
        )
    return rows


@dataclass(frozen=True, kw_only=True)
class WriteRow:
    concurrency: int
    latency_ms: float
    wire_items_per_s: float  # what the calls in flight allow
    items_per_s: float  # min(wire, CPU)
    chains_for_table: int  # chains that fill an on-demand table at its default quota
    partitions_needed: int


def write_rows(
    cpu_items_per_s: float, concurrencies: tuple[int, ...], latencies_ms: tuple[float, ...]
) -> list[WriteRow]:
    """Little's law for one hop: ``concurrency * 25 items / latency``, capped by its CPU; how many
    chains fill a table at the on-demand default (40,000 write units/s) and how many partitions
    that many writes need (1,000 write units/s each, items ≤ 1 KB, keys spread evenly)."""
    rows = []
    for latency in latencies_ms:
        for c in concurrencies:
            wire = c * BATCH / (latency / 1000)
            rate = min(wire, cpu_items_per_s)
            rows.append(
                WriteRow(
                    concurrency=c,
                    latency_ms=latency,
                    wire_items_per_s=wire,
                    items_per_s=rate,
                    chains_for_table=math.ceil(ON_DEMAND_TABLE_WCU / rate),
                    partitions_needed=math.ceil(rate / PARTITION_WCU),
                )
            )
    return rows


@dataclass(frozen=True, kw_only=True)
class FleetRow:
    shards: int
    items_per_s: float
    limited_by: str
    minutes_per_100m: float
    usd_per_100m: float


def fleet_rows(
    per_shard_items_per_s: float,
    us_per_item: float,
    shard_counts: tuple[int, ...],
    *,
    table_wcu: float = ON_DEMAND_TABLE_WCU,
    partitions: int | None = None,
    lambda_concurrency: int = 1000,
    budget_share: float = 0.9,
    prices: Prices = PRICES,
) -> list[FleetRow]:
    """One object loaded by N shard chains (``"parallel": N``): each shard is one hop at a time
    at ``per_shard_items_per_s``; together they go no faster than the write budget (``budget_share``
    of the table's write units, ``S3DDB_MAX_WCU``), than the partitions the keys spread over
    (1,000 write units/s each) or than the Lambda concurrency allows. Items ≤ 1 KB. Cost: the
    shards' CPU time (which does not depend on N) plus the write units."""
    rows = []
    for n in shard_counts:
        limits = {
            "shards": n * per_shard_items_per_s,
            "write budget": table_wcu * budget_share,
            "Lambda concurrency": min(n, lambda_concurrency) * per_shard_items_per_s,
        }
        if partitions is not None:
            limits["partitions"] = partitions * PARTITION_WCU
        limited_by = min(limits, key=lambda k: limits[k])
        rate = limits[limited_by]
        gb_s = FULL_VCPU_MB / 1024 * 1e8 * us_per_item / 1e6
        rows.append(
            FleetRow(
                shards=n,
                items_per_s=rate,
                limited_by=limited_by,
                minutes_per_100m=1e8 / rate / 60,
                usd_per_100m=gb_s * prices.lambda_gb_s_arm64 + 100 * prices.ddb_on_demand_per_million_wru,
            )
        )
    return rows


def local_ceiling(
    *,
    cores: int,
    machine_us_per_item: float,
    workers: int | None = None,
    client_us_per_item: float | None = None,
) -> float:
    """Items/s a machine can reach when the loader and the stand-ins it talks to share its
    ``cores``: every item costs ``machine_us_per_item`` of CPU across all of them (the stand-ins,
    and whatever else the machine ran meanwhile). Given ``workers`` and the loader's own
    ``client_us_per_item``, the lower of that and what the workers' own cores allow (one process
    uses one core at most: ``workers * 1e6 / client_us_per_item``)."""
    machine = cores * 1e6 / machine_us_per_item
    if workers is None or client_us_per_item is None:
        return machine
    return min(machine, min(workers, cores) * 1e6 / client_us_per_item)


def _n(x: float) -> str:
    return f"{x:,.0f}"


def render(us_per_item: float, *, source: str, prices: Prices = PRICES) -> str:
    """The README's two tuning tables, as markdown."""
    memories = (512, 1024, 1769, 3008, 5307, 10240)
    lam = lambda_rows(us_per_item, memories, prices=prices)
    out = [
        f"Model input: {us_per_item:.1f} µs of CPU per item ({source}); prices {prices.as_of} "
        f"(Lambda arm64 ${prices.lambda_gb_s_arm64:.10f}/GB-s, DynamoDB on-demand "
        f"${prices.ddb_on_demand_per_million_wru}/million write units).",
        "",
        "| Lambda memory | vCPU | processes per hop | items/s per hop | Lambda $ per million rows "
        "| DynamoDB writes $ per million rows (≤ 1 KB) | total $ per million rows |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    out.extend(
        f"| {r.memory_mb:,} MB | {r.vcpu:.2f} | {r.processes} | {_n(r.items_per_s)} "
        f"| {r.lambda_usd_per_million:.4f} "
        f"| {r.writes_usd_per_million:.3f} | {r.total_usd_per_million:.3f} |"
        for r in lam
    )
    cpu_rate = lam[memories.index(FULL_VCPU_MB)].items_per_s
    out += [
        "",
        "| `S3DDB_CONCURRENCY` | call latency | calls allow items/s | one hop items/s (CPU cap "
        f"{_n(cpu_rate)}) | chains to fill 40,000 WCU/s | partitions one hop needs |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for w in write_rows(cpu_rate, (10, 20, 40, 80), (5.0, 10.0, 20.0)):
        out.append(
            f"| {w.concurrency} | {w.latency_ms:g} ms | {_n(w.wire_items_per_s)} | {_n(w.items_per_s)} "
            f"| {w.chains_for_table} | {w.partitions_needed} |"
        )
    counts = (1, 2, 4, 8, 16)
    out += [
        "",
        "Minutes to load one object of 100 million rows (≤ 1 KB) over N shard chains "
        '(`"parallel": N`), by what one shard sustains, with `S3DDB_MAX_WCU` at 90% of an on-demand '
        "table's default 40,000 write units/s (36,000 items/s); in brackets what limits it:",
        "",
        "| one shard's items/s | " + " | ".join(f"{n} shard{'s' if n > 1 else ''}" for n in counts) + " |",
        "|---:|" + "---:|" * len(counts),
    ]
    for per_shard in (5_000.0, 10_000.0, 25_000.0, cpu_rate):
        cells = [
            f"{f.minutes_per_100m:,.0f} ({f.limited_by})"
            if f.limited_by != "shards"
            else f"{f.minutes_per_100m:,.0f}"
            for f in fleet_rows(per_shard, us_per_item, counts, prices=prices)
        ]
        out.append(f"| {_n(per_shard)} | " + " | ".join(cells) + " |")
    cost = fleet_rows(cpu_rate, us_per_item, (1,), prices=prices)[0].usd_per_100m
    out += [
        "",
        f"100 million rows cost ${cost:,.2f} whatever the shards: "
        f"${100 * prices.ddb_on_demand_per_million_wru:,.2f} of on-demand write units and "
        f"${cost - 100 * prices.ddb_on_demand_per_million_wru:,.2f} of Lambda time.",
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks model", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="a `benchmarks run` JSON file")
    parser.add_argument("--latency", type=float, default=10.0, help="which latency's runs to take (ms)")
    parser.add_argument("--cpu-factor", type=float, default=1.0, help="scale the measured CPU per item")
    args = parser.parse_args(argv)
    us = measured_us_per_item(args.results, latency_ms=args.latency) * args.cpu_factor
    try:
        source = str(args.results.resolve().relative_to(ROOT))
    except ValueError:
        source = str(args.results)
    source = f"median at {args.latency:g} ms in {source}" + (
        f", times {args.cpu_factor:g}" if args.cpu_factor != 1.0 else ""
    )
    sys.stdout.write(render(us, source=source))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
