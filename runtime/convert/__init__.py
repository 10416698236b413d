"""Converters: an image turned into other files (an ELF core file for debuggers), reading only the image model.

Why a stage of its own: a converter neither dumps nor restores; it reads a
checkpoint through images/loader.py, which validates it first, and writes
ELF structures declared once in convert/elf.py.
"""
