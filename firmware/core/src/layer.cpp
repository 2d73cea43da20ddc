#include "nmcm/layer.h"

#include "nmcm/layers/conv2d.h"
#include "nmcm/layers/flatten.h"
#include "nmcm/layers/linear.h"
#include "nmcm/layers/maxpool2d.h"
#include "nmcm/layers/relu.h"
#include "nmcm/layers/softmax.h"

namespace nmcm {

const LayerKernel* layer_kernel(uint8_t kind) {
  switch (static_cast<LayerKind>(kind)) {
    case LayerKind::kLinear:
      return &kLinearKernel;
    case LayerKind::kConv2d:
      return &kConv2dKernel;
    case LayerKind::kRelu:
      return &kReluKernel;
    case LayerKind::kFlatten:
      return &kFlattenKernel;
    case LayerKind::kSoftmax:
      return &kSoftmaxKernel;
    case LayerKind::kMaxPool2d:
      return &kMaxPool2dKernel;
  }
  return nullptr;
}

uint32_t window_out(uint32_t size, uint32_t kernel, uint32_t stride, uint32_t pad) {
  const uint64_t padded = uint64_t{size} + 2 * uint64_t{pad};
  if (kernel == 0 || stride == 0 || padded < kernel) return 0;
  return static_cast<uint32_t>((padded - kernel) / stride + 1);
}

}  // namespace nmcm
