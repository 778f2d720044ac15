#include "trtx.cuh"

// Class-aware greedy NMS per image over decoded records (see nms.py). Three kernels:
//   nms_gather  -- copy each input's valid records into one candidate list per image, with a sort key;
//   nms_rank    -- place each candidate at its rank in (score desc, input asc, anchor_index asc) order;
//   nms_greedy  -- one block per image walks the sorted list, keeping a box and suppressing its overlaps.
// Built with --fmad=false: the IoU is computed exactly as the torch reference computes it.

#define RECORD 8
#define INVALID_KEY 0xffffffffffffffffULL
#define RANK_TILE 256

// Ascending key order = score descending, then input ascending, then anchor index ascending.
__device__ __forceinline__ unsigned long long sort_key(float score, int input, float anchor_index) {
    unsigned int u = __float_as_uint(score);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // order-preserving float -> unsigned
    unsigned int index = anchor_index > 0.0f ? (unsigned int)anchor_index : 0u;
    index = index < (1u << 27) ? index : (1u << 27) - 1u;
    return ((unsigned long long)(~u) << 32) | ((unsigned long long)input << 27) | index;
}

extern "C" __global__ void nms_gather(const int* __restrict__ num, const float* __restrict__ dets, int batch, int rows,
                                      int input, int offset, int slots, float score_threshold,
                                      float* __restrict__ cand, unsigned long long* __restrict__ keys) {
    const long long t = global_index();
    if (t >= (long long)batch * rows) return;
    const int b = (int)(t / rows);
    const int i = (int)(t - (long long)b * rows);
    const float* r = dets + t * RECORD;
    const int n = min(num[b], rows);  // a decode may count more candidates than it stored
    const long long o = (long long)b * slots + offset + i;
    const bool valid = i < n && r[4] > score_threshold;
    keys[o] = valid ? sort_key(r[4], input, r[7]) : INVALID_KEY;
    if (valid) {
        for (int k = 0; k < RECORD; ++k) cand[o * RECORD + k] = r[k];
    }
}

// grid (ceil(slots / RANK_TILE), batch), block RANK_TILE
extern "C" __global__ void nms_rank(const unsigned long long* __restrict__ keys, const float* __restrict__ cand,
                                    int slots, float* __restrict__ sorted) {
    __shared__ unsigned long long tile[RANK_TILE];
    const int b = blockIdx.y;
    const int i = blockIdx.x * RANK_TILE + threadIdx.x;
    const unsigned long long* k = keys + (long long)b * slots;
    const unsigned long long mine = i < slots ? k[i] : INVALID_KEY;
    int rank = 0;
    for (int base = 0; base < slots; base += RANK_TILE) {
        const int j = base + threadIdx.x;
        tile[threadIdx.x] = j < slots ? k[j] : INVALID_KEY;
        __syncthreads();
        const int m = min(RANK_TILE, slots - base);
        for (int jj = 0; jj < m; ++jj) {
            const unsigned long long other = tile[jj];
            rank += (other < mine) || (other == mine && base + jj < i);  // ties (malformed input) by position
        }
        __syncthreads();
    }
    if (i < slots && mine != INVALID_KEY) {
        const float* src = cand + ((long long)b * slots + i) * RECORD;
        float* dst = sorted + ((long long)b * slots + rank) * RECORD;
        for (int c = 0; c < RECORD; ++c) dst[c] = src[c];
    }
}

__device__ __forceinline__ void corners(const float* r, float& x1, float& y1, float& x2, float& y2, float& area) {
    x1 = r[0] - r[2] * 0.5f;
    y1 = r[1] - r[3] * 0.5f;
    x2 = r[0] + r[2] * 0.5f;
    y2 = r[1] + r[3] * 0.5f;
    area = (x2 - x1) * (y2 - y1);
}

// grid batch, block any multiple of 32 (>= RECORD); dynamic shared memory: slots bytes
extern "C" __global__ void nms_greedy(const float* __restrict__ sorted, const unsigned long long* __restrict__ keys,
                                      int slots, float iou_threshold, int max_det, int agnostic,
                                      int* __restrict__ out_num, float* __restrict__ out_dets) {
    extern __shared__ unsigned char removed[];
    __shared__ int valid_count;
    const int b = blockIdx.x;
    if (threadIdx.x == 0) valid_count = 0;
    __syncthreads();
    int local = 0;
    for (int i = threadIdx.x; i < slots; i += blockDim.x) {
        removed[i] = 0;
        local += keys[(long long)b * slots + i] != INVALID_KEY;
    }
    atomicAdd(&valid_count, local);
    __syncthreads();
    const int n = valid_count;  // the valid candidates are sorted[0 .. n-1]
    const float* box = sorted + (long long)b * slots * RECORD;
    float* out = out_dets + (long long)b * max_det * RECORD;
    int kept = 0;
    for (int i = 0; i < n && kept < max_det; ++i) {
        if (removed[i]) continue;  // the same answer in every thread: written before the last barrier
        const float* bi = box + (long long)i * RECORD;
        if (threadIdx.x < RECORD) out[kept * RECORD + threadIdx.x] = bi[threadIdx.x];
        ++kept;
        float ax1, ay1, ax2, ay2, aarea;
        corners(bi, ax1, ay1, ax2, ay2, aarea);
        const float cls = bi[5];
        for (int j = i + 1 + threadIdx.x; j < n; j += blockDim.x) {
            const float* bj = box + (long long)j * RECORD;
            if (removed[j] || (!agnostic && bj[5] != cls)) continue;
            float bx1, by1, bx2, by2, barea;
            corners(bj, bx1, by1, bx2, by2, barea);
            const float iw = fmaxf(fminf(ax2, bx2) - fmaxf(ax1, bx1), 0.0f);
            const float ih = fmaxf(fminf(ay2, by2) - fmaxf(ay1, by1), 0.0f);
            const float inter = iw * ih;
            if (inter / (aarea + barea - inter) > iou_threshold) removed[j] = 1;
        }
        __syncthreads();
    }
    for (int k = kept * RECORD + threadIdx.x; k < max_det * RECORD; k += blockDim.x) out[k] = 0.0f;
    if (threadIdx.x == 0) out_num[b] = kept;
}
