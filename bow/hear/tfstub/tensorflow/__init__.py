"""A stand-in for tensorflow, for the HEAR 2021 tools on torch models (see bow.hear.tfstub).

Every name they touch (heareval 2021.1.3, hearvalidator 2021.0.2):

* ``import tensorflow as tf`` at module level: heareval/embeddings/runner.py:13,
  heareval/embeddings/task_embeddings.py:35, hearvalidator/validate.py:21;
* heareval/embeddings/runner.py:21, at import time: ``if torch.cuda.is_available() and not
  tf.test.is_gpu_available(cuda_only=False, min_cuda_compute_capability=None): raise
  ValueError("GPUs not available in tensorflow, but found by pytorch")``. The guard is for
  tensorflow models; with tensorflow-cpu on a CUDA machine it always raises. Here it answers
  True: no tensorflow model ever runs;
* ``isinstance(model, tf.Module)``: task_embeddings.py:83 (only for a model that is not a torch
  Module) and hearvalidator/validate.py:86: False here, as nothing is an instance of Module;
* ``tf.convert_to_tensor`` (task_embeddings.py:120), ``tf.device`` (validate.py:53) and
  ``tf.random`` (validate.py:287): for tensorflow models only; they raise.

Anything else raises AttributeError, so a tool that starts to use more of tensorflow is noticed.
"""
import types


class Module:
    """Nothing is an instance of this: every model evaluated here is a torch Module."""


def _is_gpu_available(cuda_only=False, min_cuda_compute_capability=None):
    """True: the kit's 'GPUs not available in tensorflow' guard is for tensorflow models."""
    return True


test = types.SimpleNamespace(is_gpu_available=_is_gpu_available)


def convert_to_tensor(*args, **kwargs):
    raise NotImplementedError("tensorflow stand-in (bow.hear.tfstub): convert_to_tensor is only "
                              "used for tensorflow models, which bow does not have")


def device(name):
    raise NotImplementedError(f"tensorflow stand-in (bow.hear.tfstub): tf.device({name!r}) is "
                              "only used for tensorflow models, which bow does not have")


def __getattr__(name):
    raise AttributeError(f"the tensorflow stand-in (bow.hear.tfstub) provides only Module, "
                         f"test.is_gpu_available, convert_to_tensor and device, not {name!r}: "
                         "install tensorflow-cpu to run a tensorflow model")
