"""RabbitMQ topology of the write path, declared identically by the API (on publish) and the worker.

`items` is a durable quorum queue: it survives a broker restart, caps its length with reject-publish (the last
line of backpressure: a full queue nacks the publish and the API answers 503), and dead-letters a message that
has been redelivered `x-delivery-limit` times, so even a message that crashes the worker cannot loop forever.
"""

from django.conf import settings
from kombu import Exchange, Queue

ITEMS_QUEUE = "items"
DEAD_LETTER_QUEUE = "items.dead"

# Redeliveries (worker crashes mid-batch) before RabbitMQ itself dead-letters a message. Generous: a batch
# of good messages is redelivered once per crash, and crashes are rare; poison is caught in-process first.
DELIVERY_LIMIT = 20

dead_letter_exchange = Exchange(DEAD_LETTER_QUEUE, type="direct", durable=True)
dead_letter_queue = Queue(
    DEAD_LETTER_QUEUE,
    dead_letter_exchange,
    routing_key=DEAD_LETTER_QUEUE,
    durable=True,
    queue_arguments={"x-queue-type": "quorum"},
)


def items_queue() -> Queue:
    return Queue(
        ITEMS_QUEUE,
        Exchange(ITEMS_QUEUE, type="direct", durable=True),
        routing_key=ITEMS_QUEUE,
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-max-length": settings.ITEMS_QUEUE_MAX_LENGTH,
            "x-overflow": "reject-publish",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": DEAD_LETTER_QUEUE,
            "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
        },
    )
