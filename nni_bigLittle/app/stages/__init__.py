"""The stages of a run, each reading a run folder and writing its artifact: ``train`` (co-train the supernet),
``search`` (Pareto fronts per device), ``export`` (front models and bundles), ``deploy`` (bundles verified and
benchmarked), ``evaluate`` (the test-split report); ``inputs`` holds what they read from a run."""
