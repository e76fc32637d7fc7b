"""Searching a space: a fixed-length genome over its choices, multi-objective
evolution (NSGA-II), zero-shot proxies and the objectives they trade off."""
