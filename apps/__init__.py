"""Console scripts: ``stpred-train``, ``stpred-eval``, ``stpred-bench``. Apps only compose library parts."""
