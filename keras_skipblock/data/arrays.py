"""In-memory image arrays (Fashion-MNIST, digits) as batched tf.data pipelines."""

import tensorflow as tf

from keras_skipblock.data.preprocessing import resize_batch


def array_dataset(images, labels, image_size, batch_size, training, shuffle_buffer=None,
                  flip=False, seed=None, drop_remainder=None, repeat=False):
    """uint8 images (n, h, w[, c]) + int labels -> batches of (float32 [-1, 1], int32).

    Batches first and resizes whole batches (one vectorised op per batch is
    far cheaper than one per image for small images).
    """
    if images.ndim == 3:
        images = images[..., None]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype("int32")))
    if training:
        buffer = shuffle_buffer or len(images)
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    drop = training if drop_remainder is None else drop_remainder
    dataset = dataset.batch(batch_size, drop_remainder=drop)

    def prepare(x, y):
        x = resize_batch(x, image_size)
        if flip:
            x = tf.where(tf.random.uniform([tf.shape(x)[0], 1, 1, 1]) < 0.5, x[:, :, ::-1], x)
        return x, y

    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
