"""Prints a plain line, a block, and a block it never closes; then exits."""

import sys

print("hello plain")
print("oops on stderr", file=sys.stderr)
print('"chat.block"::')
print("line one")
print("line two")
print('::"chat.block"')
print('"chat.open"::')
print("unfinished")
sys.stdout.flush()
