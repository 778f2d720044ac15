#include "trtx.cuh"

// y = x * sigmoid(beta * x) at element i; scalar_t is float or trtx_half (one build per dtype).
__device__ __forceinline__ void swish_at(const scalar_t* x, scalar_t* y, long long i, float beta) {
    const float v = to_float(x[i]);
    store(&y[i], v * sigmoid(beta * v));
}

#ifndef TRTX_AOT
// One thread per element.
extern "C" __global__ void swish(const scalar_t* x, scalar_t* y, long long n, float beta) {
    const long long i = global_index();
    if (i < n) swish_at(x, y, i, beta);
}
#else
// The entry TensorRT launches from the engine (AOT plugin): inputs, int32 arguments, outputs; beta is built in.
extern "C" __global__ void swish_aot(const scalar_t* x, int n, scalar_t* y) {
    const long long i = global_index();
    if (i < n) swish_at(x, y, i, FIELD_beta);
}
#endif
