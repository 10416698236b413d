"""Open files: one module per kind of file descriptor, each with its dump half and its restore half.

Why a package: every kind the runtime learns (pipes, sockets, eventfd, ...)
is one new module here and one line in registry.py, instead of an edit in
the dump, the image checks, the restore and `show` (docs/adding-a-file-kind.md).
"""
