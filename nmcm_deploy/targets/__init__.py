"""Where nodes run. One module per target implements the `Target` protocol (base.py):

========  ===========================  ==============================  =========================
target    alive                        endpoint (coordinator/observer)  after SHUTDOWN
========  ===========================  ==============================  =========================
sim       the process, its port open   loopback ``port``                signals if it lingers
qemu      the QEMU process             loopback ``port`` / the          signals if it lingers
                                       observers' UART, link preambles
hardware  its W5500 address answers    ``host:port``                    nothing (the board idles)
========  ===========================  ==============================  =========================

``registry`` names them (a new target is one module and one line there); ``observer`` asks a
recorded node for its STATUS or stops it, whatever its target; ``ports`` finds who holds a
loopback port and claims it for a node.
"""
