"""Protocol buffers: tf.Example-compatible messages and the dataset schema.

The generated ``_pb2`` modules are committed; ``make protos`` regenerates them.
"""
