"""The person-presence detector's task (the article's second product), on digits.

``scenes``  the deterministic scene generator (real MNIST digits on crops of real photographs)
            writing COCO folders
``coco``    the one loader for generated and user data (COCO JSON + images), validated first
``metrics`` mAP@0.5, mAP@[.5:.95] (COCO's evaluation, via torchmetrics) and presence accuracy
``head``    the head's spec (``det_f64_n1_s8``) and its ops for the simulator/estimator (no torch)
``modules`` the head's PyTorch module, the supernet's elastic head, packed labels and dense
            targets, focal + GIoU loss, the host's decode (top-k + NMS) with
            ``torchvision.ops``, and ``TASK``: the hooks the pipeline calls (``hwnas.tasks``)

The pipeline: ``hwnas run --task detection`` (stages ``data@detection`` ... ``evaluate@detection``,
params ``detection:`` in params.yaml).
"""
