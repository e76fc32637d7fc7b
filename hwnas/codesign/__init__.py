"""Hardware-software co-design: which accelerator for a task, and which network on it.

``grid``: the candidate accelerators (``codesign.grid`` of params.yaml), each a validated
spec, and their cost. ``point``: one accelerator's estimator, search and best network, all
against the task's one supernet. ``report``: the study over every point.
"""
