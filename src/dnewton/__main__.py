"""``python -m dnewton`` is the ``dnewton`` command."""

from .app.cli import main

main()
