#include "trtx.cuh"

// Rotated-box NMS per image the way ultralytics does it for OBB models (see rotated_nms.py): Fast NMS with the
// probabilistic IoU of the boxes' Gaussians, over decoded records. Three kernels, no sort:
//   rotated_gather   -- per record: a priority key and the box's Gaussian when it is a candidate;
//   rotated_suppress -- per candidate: dropped when any candidate of higher priority overlaps it (kept or not);
//   rotated_output   -- per kept candidate: its rank among the kept ones, written there if below max_det.
// Built with --fmad=false: each product and sum rounds to float32 on its own, as torch's eager ops do.

#define RECORD 8
#define INVALID_KEY 0xffffffffffffffffULL
#define TILE 256

struct Gauss {
    float x, y, a, b, c;  // center (shifted by class x class_offset) and covariance [[a, c], [c, b]]
};

// Ascending key order = score descending, then anchor index ascending (equal keys, a malformed input: by row).
__device__ __forceinline__ unsigned long long priority(float score, float anchor_index) {
    unsigned int u = __float_as_uint(score);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // order-preserving float -> unsigned
    const unsigned int index = anchor_index > 0.0f ? (unsigned int)anchor_index : 0u;
    return ((unsigned long long)(~u) << 32) | index;
}

__device__ __forceinline__ bool before(unsigned long long key, int row, unsigned long long other, int other_row) {
    return key < other || (key == other && row < other_row);
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

__device__ __forceinline__ bool candidate(const float* r, int row, int n, float score_threshold) {
    return row < n && r[4] > score_threshold;  // NaN never is; a decode may count more than it stored
}

__device__ __forceinline__ Gauss record_gauss(const float* r, float class_offset) {
    return gaussian(r[0], r[1], r[2], r[3], r[6], r[5] * class_offset);
}

#ifndef TRTX_AOT  // the three kernels of enqueue
// one thread per (image, row): the valid records above the threshold get a priority key and their Gaussian
extern "C" __global__ void rotated_gather(const int* __restrict__ num, const float* __restrict__ dets, int batch,
                                          int rows, float score_threshold, float class_offset,
                                          float* __restrict__ gauss, unsigned long long* __restrict__ keys) {
    const long long t = global_index();
    if (t >= (long long)batch * rows) return;
    const int b = (int)(t / rows), i = (int)(t - (long long)b * rows);
    const float* r = dets + t * RECORD;
    const bool valid = candidate(r, i, min(num[b], rows), score_threshold);
    keys[t] = valid ? priority(r[4], r[7]) : INVALID_KEY;
    if (!valid) return;
    const Gauss g = record_gauss(r, class_offset);
    float* out = gauss + t * 5;
    out[0] = g.x, out[1] = g.y, out[2] = g.a, out[3] = g.b, out[4] = g.c;
}

__device__ __forceinline__ Gauss load_gauss(const float* g) { return Gauss{g[0], g[1], g[2], g[3], g[4]}; }

// grid (ceil(rows / TILE), batch), block TILE: kept[j] = candidate j overlaps no candidate before it
extern "C" __global__ void rotated_suppress(const unsigned long long* __restrict__ keys, const float* __restrict__ gauss,
                                            int rows, float iou_threshold, unsigned char* __restrict__ kept) {
    __shared__ unsigned long long tile_key[TILE];
    __shared__ Gauss tile[TILE];
    const int b = blockIdx.y, j = blockIdx.x * TILE + threadIdx.x;
    const long long image = (long long)b * rows;
    const unsigned long long mine = j < rows ? keys[image + j] : INVALID_KEY;
    const Gauss g = mine != INVALID_KEY ? load_gauss(gauss + (image + j) * 5) : Gauss{0, 0, 0, 0, 0};
    bool dropped = false;
    for (int base = 0; base < rows; base += TILE) {
        const int i = base + threadIdx.x;
        tile_key[threadIdx.x] = i < rows ? keys[image + i] : INVALID_KEY;
        if (tile_key[threadIdx.x] != INVALID_KEY) tile[threadIdx.x] = load_gauss(gauss + (image + i) * 5);
        __syncthreads();
        const int m = min(TILE, rows - base);
        for (int ii = 0; ii < m && mine != INVALID_KEY && !dropped; ++ii) {
            dropped = before(tile_key[ii], base + ii, mine, j) && probiou(tile[ii], g) > iou_threshold;
        }
        __syncthreads();
    }
    if (j < rows) kept[image + j] = mine != INVALID_KEY && !dropped;
}

// grid (ceil(rows / TILE), batch), block TILE; out_num and out_dets zeroed before. A kept record's slot is the
// number of kept records before it.
extern "C" __global__ void rotated_output(const unsigned long long* __restrict__ keys,
                                          const unsigned char* __restrict__ kept, const float* __restrict__ dets,
                                          int rows, int max_det, int* __restrict__ out_num,
                                          float* __restrict__ out_dets) {
    __shared__ unsigned long long tile_key[TILE];
    const int b = blockIdx.y, j = blockIdx.x * TILE + threadIdx.x;
    const long long image = (long long)b * rows;
    const bool mine_kept = j < rows && kept[image + j];
    const unsigned long long mine = mine_kept ? keys[image + j] : INVALID_KEY;
    int rank = 0;
    for (int base = 0; base < rows; base += TILE) {
        const int i = base + threadIdx.x;
        tile_key[threadIdx.x] = i < rows && kept[image + i] ? keys[image + i] : INVALID_KEY;
        __syncthreads();
        const int m = min(TILE, rows - base);
        if (mine_kept) {
            for (int ii = 0; ii < m; ++ii) rank += tile_key[ii] != INVALID_KEY && before(tile_key[ii], base + ii, mine, j);
        }
        __syncthreads();
    }
    if (!mine_kept || rank >= max_det) return;
    const float* src = dets + (image + j) * RECORD;
    float* dst = out_dets + ((long long)b * max_det + rank) * RECORD;
    for (int k = 0; k < RECORD; ++k) dst[k] = src[k];
    atomicAdd(out_num + b, 1);
}
#else
// The ahead-of-time form TensorRT launches from the engine: one kernel, no workspace, nothing zeroed before it,
// fields built in. One block per image (grid = batch); one shared byte per row says "candidate", one "kept".
// Each candidate recomputes the Gaussians of the candidates before it (no workspace to keep them in), so this
// form is slower than the three kernels; it computes the same kept set and order.
extern "C" __global__ void rotated_nms_aot(const int* __restrict__ num, const float* __restrict__ dets, int rows,
                                           int* __restrict__ out_num, float* __restrict__ out_dets) {
    extern __shared__ unsigned char flags[];  // [rows] candidate, then [rows] kept
    unsigned char* is_candidate = flags;
    unsigned char* is_kept = flags + rows;
    __shared__ int total;
    const int b = blockIdx.x, n = min(num[b], rows);
    const float* image = dets + (long long)b * rows * RECORD;
    if (threadIdx.x == 0) total = 0;
    for (int i = threadIdx.x; i < rows; i += blockDim.x) {
        is_candidate[i] = candidate(image + (long long)i * RECORD, i, n, FIELD_score_threshold);
    }
    __syncthreads();
    for (int j = threadIdx.x; j < rows; j += blockDim.x) {
        bool dropped = !is_candidate[j];
        const float* rj = image + (long long)j * RECORD;
        const unsigned long long kj = dropped ? INVALID_KEY : priority(rj[4], rj[7]);
        const Gauss g = dropped ? Gauss{0, 0, 0, 0, 0} : record_gauss(rj, FIELD_class_offset);
        for (int i = 0; i < rows && !dropped; ++i) {
            const float* ri = image + (long long)i * RECORD;
            dropped = is_candidate[i] && before(priority(ri[4], ri[7]), i, kj, j) &&
                      probiou(record_gauss(ri, FIELD_class_offset), g) > FIELD_iou_threshold;
        }
        is_kept[j] = !dropped;
        if (!dropped) atomicAdd(&total, 1);
    }
    __syncthreads();
    float* out = out_dets + (long long)b * FIELD_max_det * RECORD;
    for (int j = threadIdx.x; j < rows; j += blockDim.x) {
        if (!is_kept[j]) continue;
        const float* rj = image + (long long)j * RECORD;
        const unsigned long long kj = priority(rj[4], rj[7]);
        int rank = 0;
        for (int i = 0; i < rows && rank < FIELD_max_det; ++i) {
            const float* ri = image + (long long)i * RECORD;
            rank += is_kept[i] && before(priority(ri[4], ri[7]), i, kj, j);
        }
        if (rank < FIELD_max_det) {
            for (int k = 0; k < RECORD; ++k) out[rank * RECORD + k] = rj[k];
        }
    }
    const int kept = min(total, FIELD_max_det);
    for (int k = kept * RECORD + threadIdx.x; k < FIELD_max_det * RECORD; k += blockDim.x) out[k] = 0.0f;
    if (threadIdx.x == 0) out_num[b] = kept;
}
#endif
