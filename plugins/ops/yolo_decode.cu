#include "trtx.cuh"

// YOLOv5 Detect decode of one level, fused with the confidence filter. See yolo_decode.py for the layout.
// One thread per (image, anchor, cell); a candidate takes the next slot of its own image's counter.

#define YOLO_MAX_ANCHORS 16
#define RECORD 8

struct YoloAnchors {
    float wh[2 * YOLO_MAX_ANCHORS];  // pixel width, height of each anchor of this level
};

extern "C" __global__ void yolo_decode(
    const scalar_t* __restrict__ head,  // [batch, na * (5 + nc), h, w] raw conv output
    int* __restrict__ num,              // [batch] candidates over the threshold; zeroed before launch
    float* __restrict__ dets,           // [batch, max_det, RECORD]
    int batch, int na, int nc, int h, int w, YoloAnchors anchors, float stride, float conf_threshold,
    int max_det, float level) {
    const long long cells = (long long)h * w;
    const long long t = global_index();
    if (t >= (long long)batch * na * cells) return;
    const int b = (int)(t / (na * cells));
    const long long anchor_index = t - (long long)b * na * cells;  // a * h * w + y * w + x
    const int a = (int)(anchor_index / cells);
    const long long cell = anchor_index - (long long)a * cells;
    // channel c of this anchor and cell is p[c * cells]
    const scalar_t* p = head + ((long long)b * na + a) * (5 + nc) * cells + cell;

    const float obj = sigmoid(to_float(p[4 * cells]));
    if (!(obj > conf_threshold)) return;  // score = obj * class probability <= obj
    int best = 0;
    float best_logit = to_float(p[5 * cells]);
    for (int c = 1; c < nc; ++c) {
        const float v = to_float(p[(5 + c) * cells]);
        if (v > best_logit) {  // first maximum wins, as torch.argmax
            best_logit = v;
            best = c;
        }
    }
    const float score = obj * sigmoid(best_logit);
    if (!(score > conf_threshold)) return;
    const int slot = atomicAdd(num + b, 1);
    if (slot >= max_det) return;  // counted, not stored: num[b] > max_det tells the caller

    const int y = (int)(cell / w);
    const int x = (int)(cell - (long long)y * w);
    const float sw = 2.0f * sigmoid(to_float(p[2 * cells]));
    const float sh = 2.0f * sigmoid(to_float(p[3 * cells]));
    float* r = dets + ((long long)b * max_det + slot) * RECORD;
    // YOLOv5 v7.0: xy = (2 sigmoid + (grid - 0.5)) * stride, wh = (2 sigmoid)^2 * anchor
    r[0] = (2.0f * sigmoid(to_float(p[0])) + ((float)x - 0.5f)) * stride;
    r[1] = (2.0f * sigmoid(to_float(p[cells])) + ((float)y - 0.5f)) * stride;
    r[2] = sw * sw * anchors.wh[2 * a];
    r[3] = sh * sh * anchors.wh[2 * a + 1];
    r[4] = score;
    r[5] = (float)best;
    r[6] = level;
    r[7] = (float)anchor_index;
}
