"""The benchmarks: start what is measured on loopback, run every case, print one table.

Run from the repository root as ``python -m bench`` (``make bench``); it is a developer tool,
not part of the wheel. It starts processes, frees ports, waits for readiness, scrapes metrics and
makes packets with the tests' harness (`tests.support.gateway`, `tests.support.diode`), so
benchmarks and end-to-end tests run the product the same way.

Method (DESIGN §11)
-------------------
Speed is measured here, never in a timed test, and always as **ratios taken in the same run**:
absolute figures on a shared two-core machine move with the weather, ratios against a ceiling
measured minutes earlier on the same machine move much less. The ceiling is a bare ASGI app
(`bench.apps.bare_app`, 64 bytes per answer, no routing, no work) served by granian and by
uvicorn (uvloop + httptools); the better of the two is "the fastest Python can answer HTTP
here", and every small-request figure of the gateway is also printed as a share of it. The
seed's figures (P50 3.62 ms, P99 9.13 ms, 438 req/s) are printed as a speed-up factor.

Two kinds of load are used, on purpose:

- **Closed loop** (wrk, 1 thread, 32 keep-alive connections) for *saturated throughput*: each
  connection sends its next request when the previous answer arrives, so the server sets the
  pace and the figure is the most it can do. Its latencies are worthless as latencies: when the
  server stalls, wrk simply stops sending, and the requests it "would have" sent are never
  measured (coordinated omission).
- **Open loop** (`bench.loadgen`, a separate process) for *latency*: requests are *scheduled* at
  a fixed rate (1,000 req/s: one every millisecond) whatever the server does, queued when every
  connection is busy, and each latency is taken from the request's **scheduled** time, not from
  the moment it was written to a socket. A 20 ms stall therefore shows as twenty requests late
  by up to 20 ms, as users would see it, instead of one. The scheduler spins (``sleep(0)``) for
  the last millisecond before each due time because event loop timers only have millisecond
  resolution; the same generator is run against the bare app so its own floor is visible next
  to the gateway's figure. (wrk2, which does this in C, is not packaged for Debian.)

Load generators and the measured servers are separate processes, each with its own core where
possible; with two cores, a run measures one server core against one client core. Everything
needed is started here (gateway, appliance simulator, collector, bare servers) with fresh keys,
on ephemeral loopback ports, and stopped at the end. The pool is pre-filled (and topped up
between bulk slices) so small-request figures measure the gateway, not the entropy supply;
ingest pushes pre-generated, valid, fresh packets (one ``source`` per connection, ``seq``
increasing) under the ``replace`` policy so the pool never answers 507.

MB means 10^6 bytes, GB 10^9. Results go to a JSON file (``--output``, default
``bench-results.json``) with the machine, the plan, every row and the load average before and
after; ``docs/BENCHMARKS.md`` explains a full run.

Modules: `bench.command` (options, the run), `bench.plan` (sizes and durations),
`bench.report` (rows, table, JSON), `bench.harness` (processes and wrk), `bench.loadgen` and
`bench.workers` (load generators in their own processes), `bench.apps` (the ASGI apps served by
name), and the cases in `bench.cases_serving`, `bench.cases_ingest`, `bench.cases_collector`.
"""
