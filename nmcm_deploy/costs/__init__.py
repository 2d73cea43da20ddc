"""Training time on the MCUs: instruction counts measured under QEMU, and the cost model on them."""
