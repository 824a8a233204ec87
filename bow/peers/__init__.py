"""The field's classic tools beside the project's models, as peers every claim is made against.

* ``bow.peers.opensmile``: openSMILE's ComParE_2016 features (audEERING's ``opensmile`` package,
  an optional extra, ``pip install "bow-audio[opensmile]"``; its licence allows research use
  only): functionals of a clip and of each 1 s chunk, 10 ms low-level descriptors and deltas;
* ``bow.peers.embed``: the ``opensmile`` store's shard worker (bow.io.sharded).
"""
