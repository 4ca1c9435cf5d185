"""``ayar ui``: the local web workbench over a workspace of run folders.

- :mod:`ayar.workbench.app`: the FastAPI application and its pages.
- :mod:`ayar.workbench.auth`: loopback by default, a token login beyond it, host and origin checks.
- :mod:`ayar.workbench.runs`: run folders, their status, curves, recipes, ledger events.
- :mod:`ayar.workbench.jobs`: ``ayar train`` / ``eval`` / ``export`` as background processes.
- :mod:`ayar.workbench.rating`: the raters' blinded pages (human evaluation).
- :mod:`ayar.workbench.svg`: loss curves as inline SVG.
"""
