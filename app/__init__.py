"""fl-mdisc application layer: the ``fl-mdisc`` command line, the ``flwr run`` launcher, the sweeps (Table 13,
Table 1, Table 3, the grid, the adaptive attacker), the benchmark and the reports.

Layering: ``fl_mdisc`` (core: maths, data, burn-in, calibration; no Flower) <- ``clients`` (ClientApp) and
``strategies`` (ServerApp) <- ``app`` (this package, on top of all three). Nothing below imports ``app``.
"""
