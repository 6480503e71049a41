"""What a user drives: the ``nni-biglittle`` CLI, the pipeline and its stages, run folders, baselines,
ablations, the report and ``nnictl`` experiments."""
