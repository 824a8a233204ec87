"""A stand-in for tensorflow, for running hearvalidator 2021.0.2 on torch models in our tests ONLY.

hearvalidator imports tensorflow at module level, but on the path it takes for a torch model it
touches only ``tf.Module`` (``isinstance(model, tf.Module)``, False here) and, for tensorflow
models alone, ``tf.device``. Installing tensorflow-cpu (~600 MB) for that would slow CI for
nothing, so tests/test_hear.py puts this folder on PYTHONPATH of the validator's subprocess,
and nowhere else: it is not part of the bow package and is never installed. Anything else
fails loudly, so a validator that starts to use more of tensorflow is noticed.
"""


class Module:
    """Nothing is an instance of this: every model validated here is a torch Module."""


def device(name):
    raise NotImplementedError(f"tensorflow stand-in (tests/hear/stub): tf.device({name!r}) is "
                              "only used for tensorflow models, which bow does not have")


def __getattr__(name):
    raise AttributeError(f"the tensorflow stand-in in tests/hear/stub provides only Module and "
                         f"device, not {name!r}: install tensorflow-cpu to validate this way")
