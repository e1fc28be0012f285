"""Default settings of ``channelconv demo`` and ``channelconv prune-demo``.

Plain Python, apart from the commands' modules, so that the ``channelconv``
parser shows them in its help without importing Keras. :mod:`.demo` and
:mod:`.prune_demo` take their ``run`` defaults from here.

Example:

>>> DEMO["epochs"], PRUNE_DEMO["seeds"]
(10, 3)
"""

#: ``channelconv demo`` (:func:`channelconv.apps.demo.run`); about 15 s on
#: 2 CPU cores.
DEMO = dict(
    epochs=10,
    steps_per_epoch=50,
    batch_size=32,
    image_size=16,
    kernel_size=3,
    learning_rate=5e-3,
    seed=0,
    output="channelconv_demo.keras",
    verbose=1,
)

#: ``channelconv prune-demo`` (:func:`channelconv.apps.prune_demo.run`).
PRUNE_DEMO = dict(
    seeds=3,
    dense_epochs=40,
    finetune_epochs=20,
    batch_size=64,
    plot="prune_demo.png",
    verbose=1,
)
