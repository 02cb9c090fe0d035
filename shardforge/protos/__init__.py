"""Protocol buffers: tf.Example-compatible messages and the dataset schema (generated _pb2 modules committed)."""
