"""``python -m medclf`` runs the command line."""

from medclf.cli import main

main()
