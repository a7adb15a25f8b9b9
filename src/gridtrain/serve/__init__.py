"""``gridtrain serve``: a web page and a REST API on the head node over the runs under one folder.

Layer: serve, above train. The service only reads run directories (``gridtrain.rundir``) and
starts the same detached driver the command line starts (``gridtrain train --detach``); it holds
no training state of its own, so restarting it never stops a training and it shows the running
ones again on start. FastAPI and uvicorn come with the ``serve`` extra.
"""
