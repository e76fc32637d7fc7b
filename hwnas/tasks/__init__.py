"""Tasks: a task is a plug-in: datasets, head, loss, metric.

One package per task (``detection`` so far; classification still lives in ``hwnas.data``
and the classifier head). The registry that names tasks comes later.
"""
