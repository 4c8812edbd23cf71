"""Pure scheduling policy: request ordering and batch formation. No threads, no I/O, clock passed in."""

from tierserve.scheduler.batching import Batch, BatchQueue, Pending, QueueFull

__all__ = ["Batch", "BatchQueue", "Pending", "QueueFull"]
