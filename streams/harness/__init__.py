"""The real programs as processes, for the integration tests and the benches (needs the ``dev``
extras): ``procs`` (broker, workers that can be killed and restarted, probes, synthetic events),
``crash`` (the crash-recovery scenario) and ``fuzz`` (malformed-message fuzzing through a worker)."""
