"""The StackOverflow answer, as data: its source, usage and published counts.

Plain Python, on every backend: ``channelconv demo`` freezes the answer's
kernels (:data:`ANSWER_FROZEN`) whatever Keras runs on. Running the
answer's code needs TensorFlow; that is :mod:`channelconv.apps.reference`.
"""

#: The answer's layer exactly as published (2019-12-23), indentation included.
ANSWER_SOURCE = """\
class CustomConv2D(Layer):
    def __init__(self, k=3):
      super(CustomConv2D, self).__init__()

      c1_1 = self.add_weight(shape=(k,k, 1, 5), initializer='zeros', dtype=tf.float32, trainable=False)
      c1_2 = self.add_weight(shape=(k,k, 1, 11), initializer='zeros', dtype=tf.float32, trainable=True)
      self.c1 = tf.concat([c1_1,c1_2], axis=-1)

      self.c2 = self.add_weight(shape=(k,k, 1, 16), initializer='zeros', dtype=tf.float32, trainable=True)
      self.c3 = self.add_weight(shape=(k,k, 1, 16), initializer='zeros', dtype=tf.float32, trainable=True)

    def call(self, inputs):
        x_1_c1 = tf.nn.conv2d(tf.expand_dims(inputs[:,:,:,0],-1), self.c1,padding='VALID')
        x_1_c2 = tf.nn.conv2d(tf.expand_dims(inputs[:,:,:,1],-1), self.c2,padding='VALID')
        x_1_c3 = tf.nn.conv2d(tf.expand_dims(inputs[:,:,:,2],-1), self.c3,padding='VALID')

        x_1 = tf.concat([x_1_c1,x_1_c2, x_1_c3], -1)
        return x_1
"""

#: The answer's usage snippet, verbatim (``CustomConv2D`` must be defined).
ANSWER_USAGE = """\
model = tf.keras.models.Sequential()
model.add(CustomConv2D(3))

model.build(input_shape=(None,None,None,3))
I = tf.keras.Input((None,None,3))
model.call(I)
model.summary()
"""

#: The ``(input_channel, filter)`` kernels the answer freezes: filters 0-4 of
#: input channel 0 (its ``c1_1``).
ANSWER_FROZEN = ((0, 0), (0, 1), (0, 2), (0, 3), (0, 4))

#: ``model.summary()`` counts printed in the answer: total, trainable,
#: non-trainable.
ANSWER_COUNTS = (432, 387, 45)
