"""``python -m dnewton`` is the ``dnewton`` command."""

from .cli import main

main()
