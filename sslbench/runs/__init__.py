"""Run orchestration, above training and evaluation.

- ``sweepfile``: sweep TOML files, checked and expanded into cells;
- ``plan``: cells resolved into runs (config hash = run id), compared with the store, queued;
- ``devices``, ``policy``: the device pool and its slots; retries by failure class;
- ``scheduler``: the local scheduler that owns the devices; ``worker``: ``runs exec``;
- ``control``: the reaper and ``runs stop``; ``watch``: ``runs watch``;
- ``slurm``: sweeps as submitit job arrays that requeue and resume; ``sbatch``: their
  submission options (the ``[slurm]`` table, ``--slurm``) and sbatch's refusals;
- ``demo``, ``environment``, ``views``: the demo, the reproducibility record, terminal views.
"""
