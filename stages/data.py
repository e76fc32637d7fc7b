"""DVC stage ``data@<task>``: the task's dataset, written under ``data/<task>/`` so that its
bytes are hashed and cached like any stage's output.

- detection: the scene generator (``hwnas.tasks.detection.scenes``) with the task's
  ``scenes`` params: COCO folders ``train/``, ``val/``, ``test/``, ``stats.json`` and a
  contact sheet; ``train_supernet.data.dataset`` names the folder.
- classification: the dataset is read where it ships (``train_supernet.data.dataset``);
  ``dataset.json`` records its splits and a hash of their arrays, so a changed dataset
  shows in ``dvc status``.
"""
from __future__ import annotations

import json

from hwnas import layout
from hwnas.params import ParamsError, load_params, run_stage


def main() -> None:
    import hashlib

    from hwnas.files import staged, write_json
    from hwnas.tasks.detection.scenes import SceneConfig, generate

    params = load_params()
    task, out = layout.current_task(), layout.task_data(layout.current_task())
    if task == "detection":
        if params.get("scenes") is None:
            raise ParamsError("params.yaml: detection.scenes: missing (the scene generator's "
                              "settings)")
        from pydantic import ValidationError

        from hwnas.params import validation_message

        try:
            config = SceneConfig(**params["scenes"])
        except ValidationError as err:
            raise ParamsError(validation_message(err, "params.yaml: detection.scenes")) from None
        stats = generate(config, out)  # the folder replaced whole, atomically
        print("data: " + ", ".join(f"{s}: {v['scenes']} scenes, {v['boxes']} boxes"
                                    for s, v in stats.items()) + f" -> {out}/")
        return
    from hwnas import tasks

    d = params["train_supernet"]["data"]
    splits = tasks.torch_task(task).load(d, params["base"]["seed"])
    digest = hashlib.sha256()
    for part in (splits.train, splits.val, splits.test):
        digest.update(part.x.numpy().tobytes())
        digest.update(part.y.numpy().tobytes())
    card = {**splits.summary(), "sha256": digest.hexdigest()}
    with staged() as files:
        write_json(files.dir(out) / "dataset.json", card)
    print(f"data: {json.dumps(card)}")


if __name__ == "__main__":
    run_stage("data", main)
