"""The parameter server: secure binary protocol, asynchronous algorithms, fault tolerance.

Layer: ps. Holds the center variable as numpy arrays and serves it to workers over
``gridtrain.ps.client``. Nothing in this package imports a training framework.

Modules, bottom up: ``protocol`` (wire format, no I/O), ``auth`` (secrets, handshake proofs, frame
MACs), ``transport`` (frames over sockets), ``algorithms`` (pure update rules), ``rules``
(algorithm settings and in-place application), ``center`` (the shared center, staleness,
consistency), ``checkpoint``, ``metrics``, ``server``, ``client``, ``exchange`` (the worker side
of each algorithm), ``cli``.
"""
