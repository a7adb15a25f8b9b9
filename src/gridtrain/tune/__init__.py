"""Hyper-parameter search (``gridtrain tune``): many trainings, each a ``gridtrain train``.

Layer: tune, above train. ``space`` turns the config's ``tune.space`` into suggestions and train
sections (pure, no Optuna import needed to check it); ``study`` is the edge to Optuna's storage
and bookkeeping of trials; ``trial`` runs one training as a subprocess; ``tuner`` is the
ask-and-tell loop; ``outputs`` writes the study's tables, best config and plots; ``control``
runs the tuner detached and reads or stops a study from another shell (``tune status``,
``tune cancel``).
"""
