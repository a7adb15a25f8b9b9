"""gridtrain: asynchronous parameter-server training of Keras models on HTCondor GPU pools.

The package is layered: ``data`` (ROOT reading, shard writing and reading, manifest),
``ps`` (parameter server), and ``cli`` at the edge, which alone turns errors into exit codes.
"""

__version__ = "0.1.0"
