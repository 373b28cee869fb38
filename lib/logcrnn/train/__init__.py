"""Distributed CRNN training: the job (:mod:`.job`), its worker (:mod:`.worker`) and the
engine seam that runs the workers (:mod:`.engines`: Horovod on Spark, TorchDistributor, or
one local process)."""
