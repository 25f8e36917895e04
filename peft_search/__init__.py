"""peft_search: the ``peft-search`` command (``peft_search.cli``), the one place that sees every layer:
``peft_space`` ← ``trainers`` ← ``search`` ← ``dashboards`` ← ``peft_search``."""
