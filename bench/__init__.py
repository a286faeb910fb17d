"""bantin's benchmarks: scan, build, digest delivery, memory and serving, each beside a baseline.

Run with ``make bench`` (10,000 and 100,000 articles and subscribers) or ``make bench-quick``
(small sizes, about a minute). Data is generated under a temporary folder and removed after;
every server is on 127.0.0.1 and stopped at the end. See README, Performance.
"""
