"""The person-presence detector's task (the article's second product), on digits.

``scenes``  the deterministic scene generator (real MNIST digits on crops of real photographs)
            writing COCO folders
``coco``    the one loader for generated and user data (COCO JSON + images), validated first
``metrics`` mAP@0.5, mAP@[.5:.95] (COCO's evaluation) and presence accuracy
"""
