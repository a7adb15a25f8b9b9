"""Staging: verified, resumable, parallel copies between local disks and XRootD storage.

Layers, each handing only locations and bytes to the next:
``location`` (parsing URLs as strings) -> ``xrd`` (the XRootD client edge) -> ``storage`` (file
operations, local or remote) -> ``transfer`` (verified copies with retries) -> ``dataset`` (push and
pull of a converted dataset, manifest last), ``stagein`` (a worker's scratch copies) and ``check``.
"""

from gridtrain.stage.stagein import StageIn

__all__ = ["StageIn"]
