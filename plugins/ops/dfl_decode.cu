#include "trtx.cuh"

// ultralytics' Detect / OBB decode (Detect._inference: DFL, dist2bbox or dist2rbox, x stride, class sigmoid),
// fused with the confidence filter. See dfl_decode.py for the layout. A candidate takes the next slot of its own
// image's counter.

#define RECORD 8
#define DFL_MAX_LEVELS 8

struct DflLevels {
    int stride[DFL_MAX_LEVELS];  // pixels per cell of each level, 0 after the last
};

// Expected distance of one side: softmax over the reg_max bins p[j * step], then sum of p_j * j (the DFL's 1x1
// conv with weights 0 .. reg_max - 1).
__device__ __forceinline__ float dfl_side(const scalar_t* __restrict__ p, long long step, int reg_max) {
    float m = to_float(p[0]);
    for (int j = 1; j < reg_max; ++j) m = fmaxf(m, to_float(p[j * step]));
    float total = 0.0f;
    for (int j = 0; j < reg_max; ++j) total += expf(to_float(p[j * step]) - m);
    float d = 0.0f;
    for (int j = 0; j < reg_max; ++j) d += expf(to_float(p[j * step]) - m) / total * (float)j;
    return d;
}

// Decode anchor `a` of image b; when it passes the threshold, count it in *count and store it in the next of the
// image's max_det slots at `image_dets`.
__device__ __forceinline__ void dfl_candidate(const scalar_t* __restrict__ head, int b, int a, int anchors, int reg_max,
                                              int nc, int height, int width, const DflLevels& levels, int angle,
                                              float conf_threshold, int max_det, int* count,
                                              float* __restrict__ image_dets) {
    const long long channels = 4LL * reg_max + nc + angle;
    const scalar_t* p = head + (long long)b * channels * anchors + a;  // channel c of this anchor: p[c * anchors]
    int best = 0;
    float best_logit = to_float(p[4LL * reg_max * anchors]);
    for (int c = 1; c < nc; ++c) {
        const float v = to_float(p[(4LL * reg_max + c) * anchors]);
        if (v > best_logit) {  // the first maximum, as torch.max
            best_logit = v;
            best = c;
        }
    }
    const float score = sigmoid(best_logit);
    if (!(score > conf_threshold)) return;  // NaN never passes
    const int slot = atomicAdd(count, 1);
    if (slot >= max_det) return;  // counted, not stored

    int base = 0, stride = 0, cell = 0, nx = 1;
    for (int l = 0; l < DFL_MAX_LEVELS && levels.stride[l] > 0; ++l) {
        const int s = levels.stride[l], ny = height / s;
        nx = width / s;
        if (a < base + ny * nx) {
            stride = s;
            cell = a - base;
            break;
        }
        base += ny * nx;
    }
    const float ax = (float)(cell % nx) + 0.5f, ay = (float)(cell / nx) + 0.5f, s = (float)stride;
    float d[4];
    for (int k = 0; k < 4; ++k) d[k] = dfl_side(p + (long long)k * reg_max * anchors, anchors, reg_max);
    float* r = image_dets + (long long)slot * RECORD;
    if (angle) {  // dist2rbox: the center offset rotated by the angle
        const float theta = to_float(p[(4LL * reg_max + nc) * anchors]);
        const float cs = cosf(theta), sn = sinf(theta);
        const float xf = (d[2] - d[0]) / 2.0f, yf = (d[3] - d[1]) / 2.0f;
        r[0] = (xf * cs - yf * sn + ax) * s;
        r[1] = (xf * sn + yf * cs + ay) * s;
        r[2] = (d[0] + d[2]) * s;
        r[3] = (d[1] + d[3]) * s;
        r[6] = theta;
    } else {  // dist2bbox(xywh=True)
        const float x1 = ax - d[0], y1 = ay - d[1], x2 = ax + d[2], y2 = ay + d[3];
        r[0] = (x1 + x2) / 2.0f * s;
        r[1] = (y1 + y2) / 2.0f * s;
        r[2] = (x2 - x1) * s;
        r[3] = (y2 - y1) * s;
        r[6] = 0.0f;
    }
    r[4] = score;
    r[5] = (float)best;
    r[7] = (float)a;
}

#ifndef TRTX_AOT
// one thread per (image, anchor); num and dets are zeroed before the launch
extern "C" __global__ void dfl_decode(
    const scalar_t* __restrict__ head,  // [batch, 4 * reg_max + nc (+ 1 angle), anchors]
    int* __restrict__ num,              // [batch] candidates over the threshold
    float* __restrict__ dets,           // [batch, max_det, RECORD]
    int batch, int anchors, int reg_max, int nc, int height, int width, DflLevels levels, int angle,
    float conf_threshold, int max_det) {
    const long long t = global_index();
    if (t >= (long long)batch * anchors) return;
    const int b = (int)(t / anchors), a = (int)(t - (long long)b * anchors);
    dfl_candidate(head, b, a, anchors, reg_max, nc, height, width, levels, angle, conf_threshold, max_det, num + b,
                  dets + (long long)b * max_det * RECORD);
}
#else
// The entry TensorRT launches from the engine (AOT plugin), fields built in. TensorRT zeroes nothing before it, so
// one block takes one image (grid = batch): its counter lives in shared memory, and the block zeroes the unused
// slots and writes num itself.
extern "C" __global__ void dfl_decode_aot(const scalar_t* __restrict__ head, int anchors, int* __restrict__ num,
                                          float* __restrict__ dets) {
    __shared__ int count;
    const DflLevels levels = {FIELD_strides};
    const int b = blockIdx.x;
    float* image = dets + (long long)b * FIELD_max_det * RECORD;
    if (threadIdx.x == 0) count = 0;
    __syncthreads();
    for (int a = threadIdx.x; a < anchors; a += blockDim.x) {
        dfl_candidate(head, b, a, anchors, FIELD_reg_max, FIELD_num_classes, FIELD_height, FIELD_width, levels,
                      FIELD_angle, FIELD_conf_threshold, FIELD_max_det, &count, image);
    }
    __syncthreads();
    const int n = count;
    const long long end = (long long)FIELD_max_det * RECORD;
    for (long long k = (long long)min(n, FIELD_max_det) * RECORD + threadIdx.x; k < end; k += blockDim.x) image[k] = 0.0f;
    if (threadIdx.x == 0) num[b] = n;
}
#endif
