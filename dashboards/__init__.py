"""dashboards: read what search/ recorded in MLflow back as Pareto fronts, tables and plots.

``fronts`` turns a search's runs into a table, rebuilds its front, compares searches and lays results out as
the paper's Table 6; ``plots`` draws Pareto plots (plotly HTML with its JavaScript embedded, matplotlib PNG).
"""

from dashboards.fronts import compare, front, table6, trials

__all__ = ["compare", "front", "table6", "trials"]
