"""Class names of the datasets detectors are trained on."""

from __future__ import annotations

#: COCO's 80 detection classes, in the order of their 0-based ids (yolov5's and ultralytics' ``names``)
COCO_NAMES = tuple(n.replace("_", " ") for n in (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign parking_meter "
    "bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee "
    "skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard tennis_racket bottle "
    "wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake "
    "chair couch potted_plant bed dining_table toilet tv laptop mouse remote keyboard cell_phone microwave oven "
    "toaster sink refrigerator book clock vase scissors teddy_bear hair_drier toothbrush"
).split())  # fmt: skip


def class_names(num_classes: int) -> list[str]:
    """COCO's names for an 80-class detector, else ``class0``, ``class1``..."""
    return list(COCO_NAMES) if num_classes == len(COCO_NAMES) else [f"class{i}" for i in range(num_classes)]
