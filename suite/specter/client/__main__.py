"""
C{python -m suite.specter.client ...}: the same as C{specter client ...}.
"""

from suite.specter.client.commands import main

if __name__ == "__main__":
    main()
