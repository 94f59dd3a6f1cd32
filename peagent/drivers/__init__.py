"""Drivers matched to the hardware: the driver store (Windows INF packages and Linux kernel modules with
their firmware, indexed and signed on the DP), the hardware identifiers the PE reads, how a driver is chosen
for a device (Windows' ranking rules, Linux modalias globs), and how the chosen packages are put into the
new OS offline so that it uses them from its first boot."""
