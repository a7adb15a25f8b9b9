"""HTCondor worker jobs: render submit descriptions, submit them, follow their event log.

Layer: batch-system edge. ``render`` turns a profile and a run into submit-description text and
never talks to HTCondor; ``submit`` is the only module that submits or removes jobs (``htcondor2``
bindings, ``condor_submit`` as the fallback); ``monitor`` only reads the job event log. An
``Executor`` drives them: render + submit one cluster for N workers, poll states, remove.
"""
