"""The class-sharded head over ``torch.distributed``: each rank holds a contiguous
block of classes (``shard``), the loss over all ranks' batches is computed with
collectives (``function``), checkpoints speak the full weight (``checkpoint``) and the
gradient norm of a training step covers every shard (``grad_norm``)."""
