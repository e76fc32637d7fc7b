"""The semantic-segmentation task, on digits: label every pixel of a scene.

``scenes``  the deterministic scene generator (the detection task's scenes, with per-pixel class
            masks) writing VOC-style folders: ``<split>/images/*.png`` + ``<split>/masks/*.png``
``masks``   the one loader for generated and user data (an images folder and a parallel masks
            folder of class-index PNGs), validated first
``head``    the head's spec and its ops for the simulator/estimator (no torch)
``modules`` the head's PyTorch module, the supernet's elastic head, the loss and score, and
            ``TASK``: the hooks the pipeline calls (``hwnas.tasks``)
"""
