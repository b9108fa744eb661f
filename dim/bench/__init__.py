"""DIM's benchmarks, each measured against a bare Twisted echo server in the same run.

Run ``dim-bench SCENARIO [--quick] --out DIR`` (or ``python -m dim.bench``).  The parent
process is a plain synchronous orchestrator: it starts the servers (``twistd -n dim``, the
echo server) and the load generator workers as child processes, talks to the workers over
JSON lines on their stdin/stdout, and samples the servers' RSS and CPU with psutil.

- :mod:`dim.bench.stats`: percentiles, slopes, ratios, saturation (pure);
- :mod:`dim.bench.schedule`: the open-loop send schedule (pure);
- :mod:`dim.bench.report`: results.json, results.md and the plots;
- :mod:`dim.bench.echo`: the baseline echo server;
- :mod:`dim.bench.loadgen`: the load generator worker (lean frame clients);
- :mod:`dim.bench.processes`: child processes: servers, workers, resource sampling;
- :mod:`dim.bench.scenarios`: one function per scenario.
"""
