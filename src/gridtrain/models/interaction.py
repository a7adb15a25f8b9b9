"""The interaction network over a jagged group: pairwise relations of its entries.

Layer: models, Keras graph pieces; ``gridtrain.models.zoo`` builds the ``interaction`` model
from them (it imports this module only when that model is built, so the registry needs no
framework). The network is JEDI-net's (Moreno et al., arXiv:1908.05318), the published HEP form of
the interaction network for jet identification:

1. every ordered pair (r, s) of a jet's constituents, r != s, gets the input ``[x_r, x_s]``;
2. the relation function f_R (an MLP, ``relation`` units) turns it into an effect e_rs;
3. each receiver pools the effects of its real senders: E_r = sum (JEDI-net) or mean over s of
   e_rs (``pooling``; the mean keeps the scale independent of the multiplicity);
4. the object function f_O (an MLP, ``object`` units) maps ``[x_r, E_r]`` to a constituent vector;
5. these are pooled (the same ``pooling``) over the jet's real constituents and a classifier MLP
   and the task's head follow (in the zoo).

With several groups (``groups: [jets, muons]``) the zoo builds steps 1-5 once per group, each with
its own relation and object networks and masks (pairs never cross groups), and concatenates the
groups' pooled vectors before the classifier.

Padding: entry ``i`` of an event is real when ``i < <group>_count``; pairs with a padded sender
and padded receivers are selected away (``MaskedRelationPooling``, ``MaskedPooling``), so the output
does not depend on what padded slots hold and does not change when the real constituents are
permuted (sums over senders and receivers are symmetric). Cost and memory grow as L^2 per event
(all pairs): keep ``dataset.jagged`` lengths of tens, as JEDI-net's 30-150.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras

from gridtrain.errors import ConfigError
from gridtrain.models.layers import MaskedPooling, MaskedRelationPooling, RelationPairs

Dense = Callable[[Any, list[int], str], Any]
"""``dense(x, units, prefix)``: the zoo's stack of Dense layers (seeded, named, activated)."""


def choose_input(
    model: str, what: str, param: str, available: list[str], chosen: str | None
) -> str:
    """The ``what`` (jagged group, image) the model runs over: the one its parameter ``param``
    names, or the dataset's only one."""
    names = ", ".join(available) or "none"
    if chosen is None:
        if len(available) != 1:
            raise ConfigError(
                f"model {model!r} runs over one {what} and the dataset has {names}; choose one "
                f"with the parameter {param}"
            )
        return available[0]
    if chosen not in available:
        raise ConfigError(
            f"model {model!r}: parameter {param} is {chosen!r}, which the dataset "
            f"does not have; its {what}s: {names}"
        )
    return chosen


def interaction_body(
    entries: Any, count: Any, params: Mapping[str, Any], dense: Dense, suffix: str = ""
) -> Any:
    """The jet vector (batch, object[-1]) of ``entries`` (batch, L, C) with ``count`` (batch,);
    ``suffix`` ends every layer's name (one group's network apart from another's)."""
    pairs = RelationPairs(name=f"pairs{suffix}")(entries)
    effects = dense(pairs, list(params["relation"]), f"relation{suffix}")
    received = MaskedRelationPooling(params["pooling"], name=f"received{suffix}")([effects, count])
    objects = keras.layers.Concatenate(name=f"object_inputs{suffix}")([entries, received])
    objects = dense(objects, list(params["object"]), f"object{suffix}")
    return MaskedPooling(params["pooling"], name=f"pool{suffix}")([objects, count])
