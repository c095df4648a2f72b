"""Adapters for training frameworks (optional extras).

* :mod:`drdm.adapters.monai`: ``DRDMDeformd``, a MONAI dictionary transform
  (``pip install drdm[monai]``);
* :mod:`drdm.adapters.torchio`: ``RandomDRDMDeformation``, a TorchIO transform for
  ``tio.Subject`` (``pip install drdm[torchio]``).

Both apply one sampled deformation to all images and label maps of a sample through
:class:`drdm.transforms.DRDMDeform`. Importing this package imports neither framework.
"""
