"""Datasets behind one registry (digits, CIFAR-10/100, Fashion-MNIST, image folders), seeded splits and
transforms; see :mod:`nni_bigLittle.data.datasets`."""
from nni_bigLittle.data.datasets import *  # noqa: F401,F403
from nni_bigLittle.data.datasets import __all__  # noqa: F401
