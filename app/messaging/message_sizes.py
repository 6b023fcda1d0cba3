"""How many items the messages of this process carry: both publishers report each message, backpressure reads the
mean to turn the queue's depth in messages into items (app/messaging/backpressure.py)."""


class ItemsPerMessage:
    """The mean items per message of the recent publishes of this process (moving average over messages)."""

    WEIGHT = 0.05  # of each new message: the mean follows a change of load within a few dozen messages

    def __init__(self) -> None:
        self.mean = 1.0  # the Django path, and the write path when POSTs come one at a time

    def published(self, items: int) -> None:
        self.mean += self.WEIGHT * (items - self.mean)  # a float += under the GIL: a lost update costs nothing


items_per_message = ItemsPerMessage()
