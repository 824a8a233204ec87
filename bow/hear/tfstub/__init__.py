"""A stand-in for tensorflow (``tensorflow/`` in this folder) for the HEAR 2021 tools on torch
models: the evaluation kit's embeddings runner (heareval 2021.1.3) and hear-validator 2021.0.2
import tensorflow at module level, but for a torch model they touch only a few names. Instead of
installing ~600 MB of tensorflow, put ``PATH`` on PYTHONPATH of THOSE processes only (never of
this one: the folder is not importable as ``tensorflow`` otherwise). pipelines.hear_eval does it
for the kit's embeddings runner; the tests do it for hear-validator, and so can you::

    PYTHONPATH=<site-packages or checkout>/bow/hear/tfstub hear-validator bow.hear.kwmlp ...

The stand-in also shadows a real tensorflow on that path; it answers
``tf.test.is_gpu_available()`` True, so the kit's "GPUs not available in tensorflow, but found
by pytorch" guard, which would stop a CUDA machine with tensorflow-cpu, lets torch models run.
"""
from pathlib import Path

PATH = Path(__file__).resolve().parent   # holds tensorflow/__init__.py
