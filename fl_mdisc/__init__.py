"""fl-mdisc core: Memorization Discrepancy, accumulative poisoning, DSC/AT, models, data, burn-in.

The core never imports Flower, ``clients`` or ``strategies``: every equation is testable without Ray.
"""

__version__ = "0.1.0"
