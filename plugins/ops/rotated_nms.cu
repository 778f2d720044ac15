#include "trtx.cuh"

// Rotated-box NMS per image the way ultralytics does it for OBB models (see rotated_nms.py): Fast NMS with the
// probabilistic IoU of the boxes' Gaussians. Three kernels, no sort:
//   rotated_gather   -- per anchor: best class and score, the record, the box's Gaussian, a priority key;
//   rotated_suppress -- per candidate: dropped when any candidate of higher priority overlaps it (kept or not);
//   rotated_output   -- per kept candidate: its rank among the kept ones, written there if below max_det.
// Built with --fmad=false: each product and sum rounds to float32 on its own, as torch's eager ops do.

#define RECORD 8
#define INVALID_KEY 0xffffffffffffffffULL
#define TILE 256

struct Gauss {
    float x, y, a, b, c;  // center (shifted by class x class_offset) and covariance [[a, c], [c, b]]
};

// Ascending key order = score descending, then anchor index ascending.
__device__ __forceinline__ unsigned long long priority(float score, int anchor) {
    unsigned int u = __float_as_uint(score);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // order-preserving float -> unsigned
    return ((unsigned long long)(~u) << 32) | (unsigned int)anchor;
}

// ultralytics.utils.metrics._get_covariance_matrix, operation by operation.
__device__ __forceinline__ Gauss gaussian(float cx, float cy, float w, float h, float angle, float shift) {
    Gauss g;
    g.x = cx + shift;
    g.y = cy + shift;
    const float a = w * w / 12.0f, b = h * h / 12.0f;
    const float cs = cosf(angle), sn = sinf(angle);
    const float cos2 = cs * cs, sin2 = sn * sn;
    g.a = a * cos2 + b * sin2;
    g.b = a * sin2 + b * cos2;
    g.c = (a - b) * cs * sn;
    return g;
}

// ultralytics.utils.metrics.batch_probiou for one pair (eps 1e-7), operation by operation.
__device__ __forceinline__ float probiou(const Gauss& p, const Gauss& q) {
    const float eps = 1e-7f;
    const float a = p.a + q.a, b = p.b + q.b, c = p.c + q.c;
    const float dx = p.x - q.x, dy = p.y - q.y;
    const float det = a * b - c * c;
    const float t1 = ((a * (dy * dy) + b * (dx * dx)) / (det + eps)) * 0.25f;
    const float t2 = ((c * (q.x - p.x) * dy) / (det + eps)) * 0.5f;
    const float pp = fmaxf(p.a * p.b - p.c * p.c, 0.0f), qq = fmaxf(q.a * q.b - q.c * q.c, 0.0f);
    const float t3 = logf(det / (4.0f * sqrtf(pp * qq) + eps) + eps) * 0.5f;
    const float bd = fminf(fmaxf(t1 + t2 + t3, eps), 100.0f);
    return 1.0f - sqrtf(1.0f - expf(-bd) + eps);
}

// one thread per (image, anchor)
extern "C" __global__ void rotated_gather(const scalar_t* __restrict__ boxes, const scalar_t* __restrict__ scores,
                                          const scalar_t* __restrict__ angles, int batch, int anchors, int classes,
                                          float score_threshold, float class_offset, float* __restrict__ cand,
                                          float* __restrict__ gauss, unsigned long long* __restrict__ keys) {
    const long long t = global_index();
    if (t >= (long long)batch * anchors) return;
    const int anchor = (int)(t % anchors);
    const scalar_t* s = scores + t * classes;
    float best = to_float(s[0]);
    int cls = 0;
    for (int k = 1; k < classes; ++k) {  // the first of equal maxima, as torch.max
        const float v = to_float(s[k]);
        if (v > best) {
            best = v;
            cls = k;
        }
    }
    const bool valid = best > score_threshold;  // NaN never is
    keys[t] = valid ? priority(best, anchor) : INVALID_KEY;
    if (!valid) return;
    const scalar_t* box = boxes + t * 4;
    const float cx = to_float(box[0]), cy = to_float(box[1]), w = to_float(box[2]), h = to_float(box[3]);
    const float angle = to_float(angles[t]);
    float* r = cand + t * RECORD;
    r[0] = cx, r[1] = cy, r[2] = w, r[3] = h, r[4] = best, r[5] = (float)cls, r[6] = angle, r[7] = (float)anchor;
    const Gauss g = gaussian(cx, cy, w, h, angle, (float)cls * class_offset);
    float* out = gauss + t * 5;
    out[0] = g.x, out[1] = g.y, out[2] = g.a, out[3] = g.b, out[4] = g.c;
}

__device__ __forceinline__ Gauss load_gauss(const float* g) { return Gauss{g[0], g[1], g[2], g[3], g[4]}; }

// grid (ceil(anchors / TILE), batch), block TILE: kept[j] = candidate j overlaps no candidate before it
extern "C" __global__ void rotated_suppress(const unsigned long long* __restrict__ keys, const float* __restrict__ gauss,
                                            int anchors, float iou_threshold, unsigned char* __restrict__ kept) {
    __shared__ unsigned long long tile_key[TILE];
    __shared__ Gauss tile[TILE];
    const int b = blockIdx.y, j = blockIdx.x * TILE + threadIdx.x;
    const long long image = (long long)b * anchors;
    const unsigned long long mine = j < anchors ? keys[image + j] : INVALID_KEY;
    const Gauss g = mine != INVALID_KEY ? load_gauss(gauss + (image + j) * 5) : Gauss{0, 0, 0, 0, 0};
    bool dropped = false;
    for (int base = 0; base < anchors; base += TILE) {
        const int i = base + threadIdx.x;
        tile_key[threadIdx.x] = i < anchors ? keys[image + i] : INVALID_KEY;
        if (tile_key[threadIdx.x] != INVALID_KEY) tile[threadIdx.x] = load_gauss(gauss + (image + i) * 5);
        __syncthreads();
        const int m = min(TILE, anchors - base);
        for (int ii = 0; ii < m && mine != INVALID_KEY && !dropped; ++ii) {
            dropped = tile_key[ii] < mine && probiou(tile[ii], g) > iou_threshold;
        }
        __syncthreads();
    }
    if (j < anchors) kept[image + j] = mine != INVALID_KEY && !dropped;
}

// grid (ceil(anchors / TILE), batch), block TILE; out_num and out_dets zeroed before. A kept candidate's slot is
// the number of kept candidates before it.
extern "C" __global__ void rotated_output(const unsigned long long* __restrict__ keys,
                                          const unsigned char* __restrict__ kept, const float* __restrict__ cand,
                                          int anchors, int max_det, int* __restrict__ out_num,
                                          float* __restrict__ out_dets) {
    __shared__ unsigned long long tile_key[TILE];
    const int b = blockIdx.y, j = blockIdx.x * TILE + threadIdx.x;
    const long long image = (long long)b * anchors;
    const bool mine_kept = j < anchors && kept[image + j];
    const unsigned long long mine = mine_kept ? keys[image + j] : INVALID_KEY;
    int rank = 0;
    for (int base = 0; base < anchors; base += TILE) {
        const int i = base + threadIdx.x;
        tile_key[threadIdx.x] = i < anchors && kept[image + i] ? keys[image + i] : INVALID_KEY;
        __syncthreads();
        const int m = min(TILE, anchors - base);
        if (mine_kept) {
            for (int ii = 0; ii < m; ++ii) rank += tile_key[ii] < mine;
        }
        __syncthreads();
    }
    if (!mine_kept || rank >= max_det) return;
    const float* src = cand + (image + j) * RECORD;
    float* dst = out_dets + ((long long)b * max_det + rank) * RECORD;
    for (int k = 0; k < RECORD; ++k) dst[k] = src[k];
    atomicAdd(out_num + b, 1);
}
