"""search: an Optuna space over peft_space's dimensions, run on Ray Tune with ASHA; records to MLflow.

The modules, each one job, from those that import nothing of this package to those that put it together:

- declarations: ``schema`` (the record format), ``implementations`` (name -> implementation), ``spec``
  (the search spec), ``space`` (the Optuna space), ``trial_config`` (what one trial trains);
- the search's parts: ``samplers``, ``searcher``, ``pareto_asha``, ``trainable``, ``stores``, ``cluster``;
- records: ``journal`` (a journalled writer), ``mlflow_runs`` (the runs), ``records`` (the Ray Tune callback);
- results: ``pareto``, ``report``, ``plots``, ``publish``; tables: ``tabular`` (reads one), ``tabulate`` (builds one);
- putting it together: ``assemble`` (Ray Tune's parts for a spec), ``conclude`` (after the search), ``runner``
  (run or resume); ``reproduce`` (re-train or export a recorded trial).
"""
