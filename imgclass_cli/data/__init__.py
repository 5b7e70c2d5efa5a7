"""Data: one image file -> a folder scan or a manifest -> the decode check -> tf.data pipelines; prepare, tfds, examples."""
