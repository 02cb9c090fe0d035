"""TFRecord framing, tf.Example codec, parse specs, index files and Arrow conversion."""
