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

struct Box {
    float x1, y1, x2, y2, area, cls;
};

__device__ __forceinline__ Box make_box(const float* r) {
    Box b;
    b.x1 = r[0] - r[2] * 0.5f;
    b.y1 = r[1] - r[3] * 0.5f;
    b.x2 = r[0] + r[2] * 0.5f;
    b.y2 = r[1] + r[3] * 0.5f;
    b.area = (b.x2 - b.x1) * (b.y2 - b.y1);
    b.cls = r[5];
    return b;
}

#ifndef TRTX_AOT  // the three kernels of enqueue
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

// grid batch, block any multiple of 32 (>= RECORD). Dynamic shared memory: cached_boxes Boxes (the first
// candidates, so the sequential walk reads shared rather than global memory), then one byte per slot.
extern "C" __global__ void nms_greedy(const float* __restrict__ sorted, const unsigned long long* __restrict__ keys,
                                      int slots, int cached_boxes, float iou_threshold, int max_det, int agnostic,
                                      int* __restrict__ out_num, float* __restrict__ out_dets) {
    extern __shared__ unsigned long long dynamic_shared[];
    Box* cache = reinterpret_cast<Box*>(dynamic_shared);
    unsigned char* removed = reinterpret_cast<unsigned char*>(cache + cached_boxes);
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
    const int cached = min(n, cached_boxes);
    const float* box = sorted + (long long)b * slots * RECORD;
    for (int i = threadIdx.x; i < cached; i += blockDim.x) cache[i] = make_box(box + (long long)i * RECORD);
    __syncthreads();
    float* out = out_dets + (long long)b * max_det * RECORD;
    int kept = 0;
    for (int i = 0; i < n && kept < max_det; ++i) {
        if (removed[i]) continue;  // the same answer in every thread: written before the last barrier
        if (threadIdx.x < RECORD) out[kept * RECORD + threadIdx.x] = box[(long long)i * RECORD + threadIdx.x];
        ++kept;
        const Box a = i < cached ? cache[i] : make_box(box + (long long)i * RECORD);
        for (int j = i + 1 + threadIdx.x; j < n; j += blockDim.x) {
            if (removed[j]) continue;
            const Box c = j < cached ? cache[j] : make_box(box + (long long)j * RECORD);
            if (!agnostic && c.cls != a.cls) continue;
            const float iw = fmaxf(fminf(a.x2, c.x2) - fmaxf(a.x1, c.x1), 0.0f);
            const float ih = fmaxf(fminf(a.y2, c.y2) - fmaxf(a.y1, c.y1), 0.0f);
            const float inter = iw * ih;
            if (inter / (a.area + c.area - inter) > iou_threshold) removed[j] = 1;
        }
        __syncthreads();
    }
    for (int k = kept * RECORD + threadIdx.x; k < max_det * RECORD; k += blockDim.x) out[k] = 0.0f;
    if (threadIdx.x == 0) out_num[b] = kept;
}
#else
// The ahead-of-time form TensorRT launches from the engine (AOT plugin): one kernel, no workspace, nothing zeroed
// before it. One block per image (grid = batch) walks the candidates in key order with a block-wide arg-min over
// a `pending` byte per slot (dynamic shared memory: one byte per slot); each candidate it takes is kept (the
// ones a kept box overlaps were cleared when it was kept), so the result is nms_greedy's. The entry point for a
// number of (num, dets) pairs is generated by nms.py and calls nms_block; the fields are built in.

struct NmsInput {
    const int* num;     // [batch]
    const float* dets;  // [batch, rows, RECORD]
    int rows;
};

__device__ __forceinline__ void take_min(unsigned long long& key, int& slot, unsigned long long k, int s) {
    if (k < key || (k == key && s < slot)) {  // ties (malformed input) by position, as nms_rank
        key = k;
        slot = s;
    }
}

// The (key, slot) minimum over the block, in every thread; `keys`/`slots`: one entry per warp.
__device__ int block_arg_min(unsigned long long key, int slot, unsigned long long* keys, int* slots, int* chosen) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        take_min(key, slot, __shfl_down_sync(0xffffffffu, key, offset), __shfl_down_sync(0xffffffffu, slot, offset));
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) {
        keys[warp] = key;
        slots[warp] = slot;
    }
    __syncthreads();
    if (warp == 0) {
        key = lane < warps ? keys[lane] : INVALID_KEY;
        slot = lane < warps ? slots[lane] : 0x7fffffff;
        for (int offset = 16; offset > 0; offset >>= 1) {
            take_min(key, slot, __shfl_down_sync(0xffffffffu, key, offset), __shfl_down_sync(0xffffffffu, slot, offset));
        }
        if (lane == 0) *chosen = key == INVALID_KEY ? -1 : slot;
    }
    __syncthreads();
    return *chosen;
}

// block: a multiple of 32 threads, at most 1024. Every pass visits slot (offset of input k) + row with the same
// thread, so each thread reads and writes only its own `pending` bytes.
__device__ void nms_block(const NmsInput* in, int inputs, float score_threshold, float iou_threshold, int max_det,
                          int agnostic, int* __restrict__ out_num, float* __restrict__ out_dets) {
    extern __shared__ unsigned char pending[];
    __shared__ unsigned long long warp_keys[32];
    __shared__ int warp_slots[32];
    __shared__ int chosen;
    const int b = blockIdx.x;
    for (int k = 0, offset = 0; k < inputs; offset += in[k].rows, ++k) {
        const int rows = in[k].rows, n = min(in[k].num[b], rows);  // a decode may count more than it stored
        const float* d = in[k].dets + (long long)b * rows * RECORD;
        for (int i = threadIdx.x; i < rows; i += blockDim.x) {
            pending[offset + i] = i < n && d[(long long)i * RECORD + 4] > score_threshold;
        }
    }
    float* out = out_dets + (long long)b * max_det * RECORD;
    int kept = 0;
    while (kept < max_det) {
        unsigned long long best = INVALID_KEY;
        int best_slot = 0x7fffffff;
        for (int k = 0, offset = 0; k < inputs; offset += in[k].rows, ++k) {
            const float* d = in[k].dets + (long long)b * in[k].rows * RECORD;
            for (int i = threadIdx.x; i < in[k].rows; i += blockDim.x) {
                if (pending[offset + i]) {
                    const float* r = d + (long long)i * RECORD;
                    take_min(best, best_slot, sort_key(r[4], k, r[7]), offset + i);
                }
            }
        }
        const int c = block_arg_min(best, best_slot, warp_keys, warp_slots, &chosen);
        if (c < 0) break;
        int source = 0, row = c;  // slot c is row `row` of input `source`
        while (row >= in[source].rows) row -= in[source++].rows;
        const float* kept_record = in[source].dets + ((long long)b * in[source].rows + row) * RECORD;
        if (threadIdx.x < RECORD) out[kept * RECORD + threadIdx.x] = kept_record[threadIdx.x];
        const Box a = make_box(kept_record);
        for (int k = 0, offset = 0; k < inputs; offset += in[k].rows, ++k) {
            const float* d = in[k].dets + (long long)b * in[k].rows * RECORD;
            for (int i = threadIdx.x; i < in[k].rows; i += blockDim.x) {
                if (!pending[offset + i]) continue;
                if (offset + i == c) {
                    pending[offset + i] = 0;
                    continue;
                }
                const Box other = make_box(d + (long long)i * RECORD);
                if (!agnostic && other.cls != a.cls) continue;
                const float iw = fmaxf(fminf(a.x2, other.x2) - fmaxf(a.x1, other.x1), 0.0f);
                const float ih = fmaxf(fminf(a.y2, other.y2) - fmaxf(a.y1, other.y1), 0.0f);
                const float inter = iw * ih;
                if (inter / (a.area + other.area - inter) > iou_threshold) pending[offset + i] = 0;
            }
        }
        ++kept;
        __syncthreads();  // `chosen` is rewritten by the next pass
    }
    for (int k = kept * RECORD + threadIdx.x; k < max_det * RECORD; k += blockDim.x) out[k] = 0.0f;
    if (threadIdx.x == 0) out_num[b] = kept;
}
#endif
