"""The console scripts, one module each (``attnedit-<name>`` is ``attnedit.cli.<name>:main``).

Commands that compose ``conf/`` are Hydra apps (run, directions, evaluate); the tools
that take run directories parse their arguments with argparse (tables, status, report,
rescore, reproduce). Nothing in the package imports this one: a script only reads its
command line and calls the library.
"""
