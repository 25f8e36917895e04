"""dashboards: read what search/ recorded in MLflow back as Pareto fronts, tables and plots."""
