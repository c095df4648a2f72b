"""Adapters for training frameworks (optional extras).

* :mod:`drdm.adapters.monai`: ``DRDMDeformd`` (invertible MONAI dictionary transform: keeps
  ``applied_operations``, pushes its record, works with ``Invertd``) and ``BigAugIntensityd``
  (``pip install drdm[monai]``);
* :mod:`drdm.adapters.torchio`: ``RandomDRDMDeformation`` (records a replayable, invertible
  ``DRDMFieldDeformation`` in the subject's history) and ``RandomBigAugIntensity``
  (``pip install drdm[torchio]``).

Both apply one sampled deformation (geometry only; the DRDM field alone unless
``stack="bigaug"``) to all images and label maps of a sample through
:class:`drdm.pipelines.DRDMDeform`, from a DRDM model, a :class:`drdm.pipelines.FieldBank` or
any field sampler, and record the field once per sample (:mod:`drdm.adapters.records`). They
pickle before and after their model's first use and work in forked, spawned and forkserver
``DataLoader`` workers (README, *DataLoader modes*). Importing this package imports neither
framework.
"""
