"""Accuracy of a `.tflite` (and of its Keras model) on a labelled data set."""

import dataclasses
import time

import numpy as np

from keras_skipblock.litert.conversion import keras_logits
from keras_skipblock.litert.runtime import LiteRTModel


@dataclasses.dataclass
class Accuracy:
    name: str
    samples: int
    top1: float
    seconds: float

    def describe(self):
        return f"{self.name}: top-1 {100 * self.top1:.2f}% on {self.samples} images ({self.seconds:.1f} s)"


def tflite_accuracy(tflite_model, images, labels, name=None, num_threads=1):
    lite = tflite_model if isinstance(tflite_model, LiteRTModel) else LiteRTModel(
        tflite_model, num_threads=num_threads)
    start = time.time()
    predictions = lite.predict(images).argmax(-1)
    return Accuracy(name or (lite.path or "tflite"), len(labels),
                    float(np.mean(predictions == labels)), time.time() - start)


def keras_accuracy(model, images, labels, name=None, batch_size=128):
    start = time.time()
    predictions = keras_logits(model, images, batch_size).argmax(-1)
    return Accuracy(name or f"keras {model.name}", len(labels),
                    float(np.mean(predictions == labels)), time.time() - start)
