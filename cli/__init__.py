"""The `dockyard` command and `python -m flows.train|tune`: parsing, rendering, exit codes.

Exit codes: 0 Completed, 1 Failed, 2 the spec cannot run (nothing created),
3 Stopped (by request, Ctrl-C or a stopping condition).
"""
