"""Development-only helpers for Weir: demo model servers and a load generator.

Nothing here is part of the installed product (pyproject's package list leaves
it out); demos, end-to-end tests and benches import it from the repository root.
"""
