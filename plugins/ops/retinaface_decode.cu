#include "trtx.cuh"

// RetinaFace decode (biubug6's PriorBox + decode + decode_landm + softmax), fused with the score filter.
// See retinaface_decode.py for the layout.

#define RF_MAX_LEVELS 8
#define RF_MAX_SIZES 32  // prior sizes over all levels
#define RF_RECORD 8

// The prior layout for one input size (RetinaPriors in retinaface_decode.py; every member is 4 bytes).
struct RetinaPriors {
    int levels;
    int end[RF_MAX_LEVELS];     // index of the first prior after this level
    int cols[RF_MAX_LEVELS];    // feature map columns: ceil(width / step)
    int first[RF_MAX_LEVELS];   // this level's first entry in min_size
    int sizes[RF_MAX_LEVELS];   // prior sizes per cell in this level
    int step[RF_MAX_LEVELS];    // stride in input pixels
    int min_size[RF_MAX_SIZES]; // prior side in input pixels
};

// Decode prior a of image b (t = b * priors + a): its landmarks always; when its face score passes the threshold,
// count it in *count and store its record in the next of the image's max_det slots at `image_dets`.
__device__ __forceinline__ void retinaface_prior(
    const scalar_t* __restrict__ loc, const scalar_t* __restrict__ conf, const scalar_t* __restrict__ landms,
    float* __restrict__ landmarks, long long t, int a, const RetinaPriors& layout, int height, int width,
    float variance0, float variance1, float conf_threshold, int max_det, int* count, float* __restrict__ image_dets) {
    int level = 0;
    while (level + 1 < layout.levels && a >= layout.end[level]) ++level;
    const int local = a - (level ? layout.end[level - 1] : 0);
    const int k = local % layout.sizes[level];
    const int cell = local / layout.sizes[level];
    const int i = cell / layout.cols[level];
    const int j = cell - i * layout.cols[level];
    // PriorBox.forward computes in Python floats (double) and stores float32
    const int step = layout.step[level];
    const int size = layout.min_size[layout.first[level] + k];
    const float pcx = (float)(((double)j + 0.5) * step / width);
    const float pcy = (float)(((double)i + 0.5) * step / height);
    const float psx = (float)((double)size / width);
    const float psy = (float)((double)size / height);
    const float fw = (float)width, fh = (float)height;

    // decode_landm: priors[:, :2] + pre * variances[0] * priors[:, 2:], then x (W, H)
    const scalar_t* p = landms + t * 10;
    float* out = landmarks + t * 10;
    for (int q = 0; q < 5; ++q) {
        out[2 * q] = (pcx + to_float(p[2 * q]) * variance0 * psx) * fw;
        out[2 * q + 1] = (pcy + to_float(p[2 * q + 1]) * variance0 * psy) * fh;
    }

    // F.softmax over the two logits, the face class
    const float l0 = to_float(conf[t * 2]), l1 = to_float(conf[t * 2 + 1]);
    const float m = fmaxf(l0, l1);
    const float e0 = expf(l0 - m), e1 = expf(l1 - m);
    const float score = e1 / (e0 + e1);
    if (!(score > conf_threshold)) return;
    const int slot = atomicAdd(count, 1);
    if (slot >= max_det) return;  // counted, not stored: num[b] > max_det tells the caller

    // decode: centers, sizes, corners as biubug6 computes them, x (W, H); stored as cx, cy, w, h
    const scalar_t* l = loc + t * 4;
    const float cx = pcx + to_float(l[0]) * variance0 * psx;
    const float cy = pcy + to_float(l[1]) * variance0 * psy;
    const float w = psx * expf(to_float(l[2]) * variance1);
    const float h = psy * expf(to_float(l[3]) * variance1);
    const float x1 = (cx - w / 2.0f) * fw, y1 = (cy - h / 2.0f) * fh;
    const float x2 = (w + (cx - w / 2.0f)) * fw, y2 = (h + (cy - h / 2.0f)) * fh;
    float* r = image_dets + (long long)slot * RF_RECORD;
    r[0] = (x1 + x2) / 2.0f;
    r[1] = (y1 + y2) / 2.0f;
    r[2] = x2 - x1;
    r[3] = y2 - y1;
    r[4] = score;
    r[5] = 0.0f;
    r[6] = (float)level;
    r[7] = (float)a;
}

#ifndef TRTX_AOT
// One thread per (image, prior); num and dets are zeroed before the launch.
extern "C" __global__ void retinaface_decode(
    const scalar_t* __restrict__ loc,     // [batch, priors, 4]  (dx, dy, dw, dh)
    const scalar_t* __restrict__ conf,    // [batch, priors, 2]  class logits (background, face)
    const scalar_t* __restrict__ landms,  // [batch, priors, 10] 5 x (dx, dy)
    int* __restrict__ num,                // [batch] faces over the threshold; zeroed before launch
    float* __restrict__ dets,             // [batch, max_det, RF_RECORD]
    float* __restrict__ landmarks,        // [batch, priors, 10] decoded, every prior
    int batch, int priors, RetinaPriors layout, int height, int width, float variance0, float variance1,
    float conf_threshold, int max_det) {
    const long long t = global_index();
    if (t >= (long long)batch * priors) return;
    const int b = (int)(t / priors);
    retinaface_prior(loc, conf, landms, landmarks, t, (int)(t - (long long)b * priors), layout, height, width,
                     variance0, variance1, conf_threshold, max_det, num + b, dets + (long long)b * max_det * RF_RECORD);
}
#else
// The entry TensorRT launches from the engine (AOT plugin), fields built in (RF_LAYOUT: the RetinaPriors of
// FIELD_height x FIELD_width, RF_PRIORS priors). TensorRT zeroes nothing before it, so one block takes one image
// (grid = batch): its counter lives in shared memory, and the block zeroes the unused slots and writes num.
extern "C" __global__ void retinaface_decode_aot(const scalar_t* __restrict__ loc, const scalar_t* __restrict__ conf,
                                                 const scalar_t* __restrict__ landms, int batch, int* __restrict__ num,
                                                 float* __restrict__ dets, float* __restrict__ landmarks) {
    __shared__ int count;
    const RetinaPriors layout = RF_LAYOUT;
    const float variance[2] = FIELD_variance;
    const int b = blockIdx.x;
    if (b >= batch) return;
    float* image = dets + (long long)b * FIELD_max_det * RF_RECORD;
    if (threadIdx.x == 0) count = 0;
    __syncthreads();
    for (int a = threadIdx.x; a < RF_PRIORS; a += blockDim.x) {
        retinaface_prior(loc, conf, landms, landmarks, (long long)b * RF_PRIORS + a, a, layout, FIELD_height,
                         FIELD_width, variance[0], variance[1], FIELD_conf_threshold, FIELD_max_det, &count, image);
    }
    __syncthreads();
    const int n = count;
    const long long end = (long long)FIELD_max_det * RF_RECORD;
    for (long long k = (long long)min(n, FIELD_max_det) * RF_RECORD + threadIdx.x; k < end; k += blockDim.x) {
        image[k] = 0.0f;
    }
    if (threadIdx.x == 0) num[b] = n;
}
#endif
