"""The detection toolkit every detector netdef shares (YOLOv5, RetinaFace, the ultralytics families...).

Split the way torchvision splits its detection models (model / anchors / box coder / transform): a detector
package writes its network and its decode; everything around them is here, one concern per module.

=====================  =========================================================================================
``boxes``              :class:`Detections` (one image's boxes, scores, classes and per-box extras such as
                       landmarks or mask coefficients, as arrays), center <-> corner conversions, IoU
``decode``             in-network decode helpers: the best class and its score of every box (TensorRT TopK)
``nms``                NMS wherever it runs: :class:`NmsRule` (the thresholds) with the exact host NMS
                       (``trtx.nms``) and the ``nms`` GPU kernel, TensorRT's INMSLayer wired for a detector
                       (:func:`nms_layer`, ``TRT_NMS_TOPK_LIMIT``), and where NMS goes for a command
``compare``            the one post-NMS comparison ``check`` and the tests use: detections held to PyTorch's
                       candidates, correct under near-tied scores (:func:`compare_detections`)
``draw``               boxes with labels, points (landmarks, keypoints), masks on a BGR image
``results``            COCO-style result JSON and the one-line summary
``options``            command-line helpers: thresholds in [0, 1], counts, an engine's metadata section
``names``              a checkpoint's class names carried in the weights (``<head>.names``) and back
=====================  =========================================================================================

docs/netdefs.md ("Writing a detector") builds a complete toy detector from these pieces.
"""
