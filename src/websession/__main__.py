"""``python -m websession`` runs the ``websession`` command."""

from .cli import main

main()
