"""Load benchmark of lgsp-bus with in-run baselines (``python -m bench --help``).

Everything runs on loopback, each part in its own process:

* the upstream simulators (``lgsp-bus sim civil-status`` / ``population``);
* baseline B: the civil-status simulator called directly (the floor);
* baseline A: a minimal aiohttp → aio-pika RPC → consumer → simulator path written here
  (:mod:`bench.baseline`), with the bus's durability settings;
* the bus: ``lgsp-bus gateway`` + ``lgsp-bus worker`` on the real RabbitMQ (a vhost created
  for the run and deleted after it), REST and SOAP paths;
* embedded: ``lgsp-bus run --no-sim`` on the in-memory broker.

A separate load-generator process (:mod:`bench.loadgen`) drives each target in turn, and
the harness reads CPU time and peak RSS of every process from ``/proc``. Modules:
:mod:`bench.workload` (targets and their requests), :mod:`bench.busconfig` (the
routing.yaml the bus runs on), :mod:`bench.systems` (starting and stopping the targets),
:mod:`bench.procs` (child processes), :mod:`bench.procstat` (``/proc``),
:mod:`bench.rabbit` (the run's vhost), :mod:`bench.measure` (one measurement),
:mod:`bench.run` (the interleaved rounds), :mod:`bench.report` (medians, ratios, table,
JSON), :mod:`bench.soak` (soak mode), :mod:`bench.profiler` (py-spy).
"""

__all__: list[str] = []
