"""Benchmarks that reproduce the method papers' tables, one module per method.

Each module exposes one ``run_*`` function that the method's registry entry names (the
function behind ``sharpstack bench <method>``); they print nothing and write their tables,
CSVs and figures to the folder they are given.
"""
