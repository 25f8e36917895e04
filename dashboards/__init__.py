"""dashboards: read what search/ recorded in MLflow back as Pareto fronts and tables.

``fronts`` turns a search's runs into a table, rebuilds its front, compares searches and lays results out as
the paper's Table 6. It reads the records through their format (``search.schema``) and nothing else of
``search`` but the Pareto arithmetic (``search.pareto``); nothing below imports ``dashboards``.
"""

from dashboards.fronts import compare, front, table6, trials

__all__ = ["compare", "front", "table6", "trials"]
