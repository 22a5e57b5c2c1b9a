"""The command-line wing: one module per ``mrfa`` command, each with ``add_arguments(parser)`` and
``run(args) -> int``. Only these modules parse arguments; :mod:`mrfa.training`, :mod:`mrfa.inference` and the
rest are libraries. :mod:`mrfa.cli` mounts them.
"""
