"""Pedestrian detector (torchvision Faster R-CNN + FPN) trained with :mod:`deepmot.matching` and
:mod:`deepmot.losses`: model and checkpoint loading (:mod:`.model`), per-stage matchers and losses
(:mod:`.stages`), MOT-format training data (:mod:`.data`), the training loop (:mod:`.train`), COCO AP
and private detections (:mod:`.evaluate`)."""
