// What every layer kernel has in common: its description (decoded from the blob's layer table),
// the buffers of one call, and the fixed set of entry points each layer file provides
// (as TFLM kernels do: check once at load, then forward and backward).
//
// Gradient convention, for every layer: backward ACCUMULATES into the parameter gradients dw/db
// (so micro-batches add up until zero_grad) and OVERWRITES the input gradient din.
#pragma once

#include <cstdint>

#include "nmcm/status.h"
#include "nmcm/tensor.h"

namespace nmcm {

// Codes of the blob's layer table (docs/blob-format.md, "Layer record").
enum class LayerKind : uint8_t {
  kLinear = 1,
  kConv2d = 2,
  kRelu = 3,
  kFlatten = 4,
  kSoftmax = 5,
  kMaxPool2d = 6,
};

struct LayerDesc {
  LayerKind kind;
  bool has_bias;
  uint16_t model_index;  // position in the whole model
  Shape in;              // per sample: rank 1 (features) or 3 (C, H, W)
  Shape out;
  uint16_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;  // conv2d / maxpool2d, else 0
  int16_t weight_tensor;  // index in the stage's tensor table, or -1
  int16_t bias_tensor;
};

// Geometry of a 2-D window layer (conv2d, maxpool2d) for the arithmetic functions.
struct Geom2d {
  uint32_t c, h, w;     // input channels and size
  uint32_t oc, oh, ow;  // output channels and size
  uint32_t kh, kw, sh, sw, ph, pw;
};

inline Geom2d geom2d(const LayerDesc& d) {
  return Geom2d{d.in.dims[0],  d.in.dims[1],  d.in.dims[2], d.out.dims[0],
                d.out.dims[1], d.out.dims[2], d.kernel_h,   d.kernel_w,
                d.stride_h,    d.stride_w,    d.pad_h,      d.pad_w};
}

// The buffers of one forward or backward call on a micro-batch of n samples, all [n, *shape].
// Pointers a layer does not need may be null or stale (e.g. a transient input during backward).
struct LayerArgs {
  uint32_t n;
  const float* in;    // this layer's input activation
  float* out;         // its output activation
  const float* w;     // weight, or null
  const float* b;     // bias, or null
  float* dw;          // weight gradient (accumulated)
  float* db;          // bias gradient (accumulated)
  const float* dout;  // gradient with respect to out
  float* din;         // gradient with respect to in (overwritten); null: nobody needs it
};

// What a layer's backward reads besides dout, so that the loader can check those activations are
// kept (stashed) from forward to backward.
constexpr uint8_t kReadsInput = 1;
constexpr uint8_t kReadsOutput = 2;

struct LayerKernel {
  const char* name;
  uint8_t backward_reads;  // kReadsInput | kReadsOutput
  // Options and the output shape against the input shape; weight/bias references present
  // exactly when the layer has them.
  Status (*check)(const LayerDesc& d);
  // Shape of the weight (role 0) or bias (role 1) tensor; false if the layer has no such tensor.
  bool (*param_shape)(const LayerDesc& d, uint8_t role, Shape* shape);
  void (*forward)(const LayerDesc& d, const LayerArgs& a);
  void (*backward)(const LayerDesc& d, const LayerArgs& a);
};

// The kernel of a layer-table code, or null for a code this build does not know.
const LayerKernel* layer_kernel(uint8_t kind);

// Output size of a window along one axis, as PyTorch computes it (floor mode); 0 if the window
// does not fit the padded input or an option is zero.
uint32_t window_out(uint32_t size, uint32_t kernel, uint32_t stride, uint32_t pad);

}  // namespace nmcm
