#include "trtx.cuh"

// y = x * sigmoid(beta * x), one thread per element; scalar_t is float or trtx_half (one build per dtype).
extern "C" __global__ void swish(const scalar_t* x, scalar_t* y, long long n, float beta) {
    const long long i = global_index();
    if (i >= n) return;
    const float v = to_float(x[i]);
    store(&y[i], v * sigmoid(beta * v));
}
