#include "trtx.cuh"

// YOLOv5 Detect decode of one level, fused with the confidence filter. See yolo_decode.py for the layout.
// A candidate takes the next slot of its own image's counter.

#define YOLO_MAX_ANCHORS 16
#define RECORD 8

struct YoloAnchors {
    float wh[2 * YOLO_MAX_ANCHORS];  // pixel width, height of each anchor of this level
};

// Decode anchor `anchor_index` (a * h * w + y * w + x) of image b; when it passes the threshold, count it in
// *count and store it in the next of the image's max_det slots at `image_dets`.
__device__ __forceinline__ void yolo_candidate(const scalar_t* __restrict__ head, int b, long long anchor_index,
                                               int na, int nc, int h, int w, const YoloAnchors& anchors,
                                               float stride, float conf_threshold, int max_det, float level,
                                               int* count, float* __restrict__ image_dets) {
    const long long cells = (long long)h * w;
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
    const int slot = atomicAdd(count, 1);
    if (slot >= max_det) return;  // counted, not stored: num[b] > max_det tells the caller

    const int y = (int)(cell / w);
    const int x = (int)(cell - (long long)y * w);
    const float sw = 2.0f * sigmoid(to_float(p[2 * cells]));
    const float sh = 2.0f * sigmoid(to_float(p[3 * cells]));
    float* r = image_dets + (long long)slot * RECORD;
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

#ifndef TRTX_AOT
// One thread per (image, anchor, cell); num and dets are zeroed before the launch.
extern "C" __global__ void yolo_decode(
    const scalar_t* __restrict__ head,  // [batch, na * (5 + nc), h, w] raw conv output
    int* __restrict__ num,              // [batch] candidates over the threshold; zeroed before launch
    float* __restrict__ dets,           // [batch, max_det, RECORD]
    int batch, int na, int nc, int h, int w, YoloAnchors anchors, float stride, float conf_threshold,
    int max_det, float level) {
    const long long per_image = (long long)na * h * w;
    const long long t = global_index();
    if (t >= (long long)batch * per_image) return;
    const int b = (int)(t / per_image);
    yolo_candidate(head, b, t - b * per_image, na, nc, h, w, anchors, stride, conf_threshold, max_det, level,
                   num + b, dets + (long long)b * max_det * RECORD);
}
#else
// The entry TensorRT launches from the engine (AOT plugin), fields built in (YOLO_NA = anchors / 2). TensorRT
// zeroes nothing before it, so one block takes one image (grid = batch): its counter lives in shared memory,
// and the block zeroes the unused slots and writes num itself.
extern "C" __global__ void yolo_decode_aot(const scalar_t* __restrict__ head, int h, int w, int* __restrict__ num,
                                           float* __restrict__ dets) {
    __shared__ int count;
    const YoloAnchors anchors = {FIELD_anchors};
    const int b = blockIdx.x;
    float* image = dets + (long long)b * FIELD_max_det * RECORD;
    if (threadIdx.x == 0) count = 0;
    __syncthreads();
    const long long per_image = (long long)YOLO_NA * h * w;
    for (long long a = threadIdx.x; a < per_image; a += blockDim.x) {
        yolo_candidate(head, b, a, YOLO_NA, FIELD_num_classes, h, w, anchors, FIELD_stride, FIELD_conf_threshold,
                       FIELD_max_det, (float)FIELD_level, &count, image);
    }
    __syncthreads();
    const int n = count;
    const long long end = (long long)FIELD_max_det * RECORD;
    for (long long k = (long long)min(n, FIELD_max_det) * RECORD + threadIdx.x; k < end; k += blockDim.x) image[k] = 0.0f;
    if (threadIdx.x == 0) num[b] = n;
}
#endif
