"""The write path's transport: a POSTed item becomes a persistent, confirmed message on the `items` queue
(publish.py, admitted by backpressure.py), which the worker's consumer step (consumer.py) stores in batches.

queues.py declares the topology, messages.py the one message shape every side reads and writes.
"""
