// trtx.cuh -- the few device helpers every trtx kernel shares.
//
// NVRTC compiles here without the CUDA toolkit's headers, so this file stands in for the parts of
// cuda_fp16.h the kernels need. It is handed to NVRTC as the header "trtx.cuh": `#include "trtx.cuh"`.
#pragma once

// fp16 storage type: 16 bits, converted to and from float with PTX's cvt (round to nearest even).
struct alignas(2) trtx_half {
    unsigned short bits;
};

__device__ __forceinline__ float to_float(float v) { return v; }

__device__ __forceinline__ float to_float(trtx_half v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
}

__device__ __forceinline__ void store(float* p, float v) { *p = v; }

__device__ __forceinline__ void store(trtx_half* p, float v) {
    unsigned short b;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(b) : "f"(v));
    p->bits = b;
}

// Index of this thread in a 1-D launch (64-bit: tensors may hold more than 2^31 elements).
__device__ __forceinline__ long long global_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }
