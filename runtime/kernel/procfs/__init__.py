"""Readers of /proc/PID: one module per /proc source, each returning model types.

Why a package: every /proc file has its own format and its own kernel
quirks (field numbering, escaping, what is hidden without ptrace access), so
each is parsed in one place, and the dump composes the results. All of them
report OS errors through runtime.procfs.files, which turns them into the
runtime's process errors naming the PID.
"""
