"""A model of one's own over shared weights, for a server where many sessions read one run.

What a viewer changes on a model lives on its modules, not in its weights: the hooks it registers
to read attention, an RNN hook point's step counter, train/eval mode. Two sessions that share one
module tree would see each other's hooks and mix their tensors. `own_modules` gives each its own
tree of modules over the *same* parameter and buffer tensors: a few kilobytes of Python objects per
copy, no copy of a weight, tied weights still one tensor, and the same logits.
"""

from __future__ import annotations

import copy
import itertools

from torch import nn


def own_modules(model: nn.Module) -> nn.Module:
    """`model`'s module tree copied (hooks, modes, hook points and every other module attribute are
    the copy's own) with every parameter and buffer shared, not copied. Only reading is safe across
    copies: an optimizer step on one changes the weights of all."""
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, shared)
