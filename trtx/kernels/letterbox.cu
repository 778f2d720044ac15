// letterbox: ultralytics' letterbox(auto=False) + ToTensor in one pass, for a batch of BGR uint8 HWC images.
//
// One thread per output pixel (x, y) of image b = blockIdx.z. Inside the resized area the source coordinate is
// OpenCV's INTER_LINEAR one, sx = (x - left + 0.5) * scale_x - 0.5 with scale_x = src_w / new_w, clamped at the
// borders as cv::resize clamps it; outside it the pixel is the pad value. The three channels are written as
// planes R, G, B (BGR -> RGB, HWC -> CHW) divided by 255, as scalar_t (float or trtx_half).
#include "trtx.cuh"

struct LetterboxImage {             // 48 bytes; trtx.letterbox.PARAM_DTYPE mirrors it
    unsigned long long src;         // device address of the BGR uint8 HWC image
    int src_w, src_h, src_pitch;    // pitch: bytes per source row
    int new_w, new_h;               // size after resizing
    int left, top;                  // padding before the resized image
    float scale_x, scale_y;         // src / new
    int pad_;
};

// OpenCV's source index and weight along one axis (cv::resize, INTER_LINEAR, the non-integer-scale path).
__device__ __forceinline__ void source_coord(int d, float scale, int size, int& i0, int& i1, float& a) {
    float f = ((float)d + 0.5f) * scale - 0.5f;
    int i = (int)floorf(f);
    a = f - (float)i;
    if (i < 0) {
        i = 0;
        a = 0.0f;
    }
    if (i >= size - 1) {
        i = size - 1;
        a = 0.0f;
    }
    i0 = i;
    i1 = min(i + 1, size - 1);
}

extern "C" __global__ void letterbox(const LetterboxImage* __restrict__ images, scalar_t* __restrict__ dst,
                                     int batch, int dst_w, int dst_h, float pad_value) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int b = blockIdx.z;
    if (x >= dst_w || y >= dst_h || b >= batch) return;
    const LetterboxImage im = images[b];
    const long long plane = (long long)dst_w * dst_h;
    scalar_t* out = dst + (long long)b * 3 * plane + (long long)y * dst_w + x;
    const float inv255 = 1.0f / 255.0f;
    const int ux = x - im.left, uy = y - im.top;
    if (ux < 0 || uy < 0 || ux >= im.new_w || uy >= im.new_h) {
        const float v = pad_value * inv255;
        store(out, v);
        store(out + plane, v);
        store(out + 2 * plane, v);
        return;
    }
    int x0, x1, y0, y1;
    float ax, ay;
    source_coord(ux, im.scale_x, im.src_w, x0, x1, ax);
    source_coord(uy, im.scale_y, im.src_h, y0, y1, ay);
    const unsigned char* src = (const unsigned char*)im.src;
    const unsigned char* r0 = src + (long long)y0 * im.src_pitch;
    const unsigned char* r1 = src + (long long)y1 * im.src_pitch;
    float c[3];
#pragma unroll
    for (int k = 0; k < 3; ++k) {  // k: B, G, R
        const float top = (float)r0[3 * x0 + k] * (1.0f - ax) + (float)r0[3 * x1 + k] * ax;
        const float bottom = (float)r1[3 * x0 + k] * (1.0f - ax) + (float)r1[3 * x1 + k] * ax;
        c[k] = top * (1.0f - ay) + bottom * ay;
    }
    store(out, c[2] * inv255);          // R
    store(out + plane, c[1] * inv255);  // G
    store(out + 2 * plane, c[0] * inv255);  // B
}
