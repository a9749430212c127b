"""Released weights, installed as package data of ``retinaface.pretrained`` (see ``NOTICE``)."""
