"""Run the local demo: C{python -m suite.demo}."""

from suite.demo.cli import main

main()
