// The stage blob loader. Each check below is one item of docs/blob-format.md, "Checks the loader
// makes", in that order; a comment names the section where the order alone does not make it clear.
#include "nmcm/blob.h"

#include <cstring>

#include "nmcm/crc32.h"

namespace nmcm {
namespace {

// Little-endian reads and writes, byte by byte: no alignment or host byte-order assumptions.
uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}
int16_t rdi16(const uint8_t* p) { return static_cast<int16_t>(rd16(p)); }
void wr32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v >> 16);
  p[3] = static_cast<uint8_t>(v >> 24);
}
uint64_t align16(uint64_t n) { return (n + 15) / 16 * 16; }

// True if the shape has at most 2^32 - 1 elements; multiplies step by step so that no product of
// hostile dimensions can overflow 64 bits.
bool numel_fits_u32(const Shape& s) {
  uint64_t n = 1;
  for (uint8_t i = 0; i < s.rank; ++i) {
    n *= s.dims[i];
    if (n > 0xFFFFFFFFu) return false;
  }
  return true;
}

constexpr uint8_t kMagic[4] = {'N', 'M', 'C', 'B'};
constexpr uint16_t kKnownFlags = kFlagFirstStage | kFlagLastStage | kFlagMomentum;

Status malformed(const char* subject, uint32_t index, const char* message) {
  return error_at(StatusCode::kMalformed, subject, static_cast<int32_t>(index), message);
}

// Shape of a layer-record dimension triple of the given rank; false if a used dimension is 0 or an
// unused one is not 1 (docs/blob-format.md, "Layer record").
bool read_shape(const uint8_t* p, uint8_t rank, Shape* shape) {
  if (rank != 1 && rank != 3) return false;
  *shape = Shape{{rd32(p), rd32(p + 4), rd32(p + 8), 1}, rank};
  for (uint8_t i = 0; i < 3; ++i) {
    if (i < rank ? shape->dims[i] == 0 : shape->dims[i] != 1) return false;
  }
  return numel_fits_u32(*shape);
}

BlobHeader read_header(const uint8_t* b) {
  BlobHeader h{};
  h.version = rd16(b + 4);
  h.total_size = rd32(b + 8);
  h.stage_index = rd16(b + 12);
  h.stage_count = rd16(b + 14);
  h.layer_count = rd16(b + 16);
  h.tensor_count = rd16(b + 18);
  h.buffer_count = rd16(b + 20);
  h.flags = rd16(b + 22);
  h.micro_batch = rd16(b + 24);
  h.slots = rd16(b + 26);
  h.arena_size = rd32(b + 28);
  h.layer_table = rd32(b + 32);
  h.tensor_table = rd32(b + 36);
  h.buffer_table = rd32(b + 40);
  h.data = rd32(b + 44);
  std::memcpy(h.model_hash, b + 48, kModelHashSize);
  return h;
}

Status check_header(const BlobHeader& h, size_t arena_capacity, const StageExpect* expect) {
  // Tables lie inside [64, data) in the order of "Layout", with no gaps.
  const uint64_t tensor_table =
      uint64_t{h.layer_table} + uint64_t{h.layer_count} * kLayerRecordSize;
  const uint64_t buffer_table = tensor_table + uint64_t{h.tensor_count} * kTensorRecordSize;
  const uint64_t data = align16(buffer_table + uint64_t{h.buffer_count} * kBufferRecordSize);
  if (h.layer_table != kBlobHeaderSize || h.tensor_table != tensor_table ||
      h.buffer_table != buffer_table || h.data != data ||
      uint64_t{h.data} > uint64_t{h.total_size} - kBlobCrcSize) {
    return error(StatusCode::kMalformed, "table offsets do not match the table sizes");
  }
  if (h.stage_count == 0 || h.stage_index >= h.stage_count) {
    return error(StatusCode::kMalformed, "stage index is not below the stage count");
  }
  const uint16_t position =
      static_cast<uint16_t>((h.stage_index == 0 ? kFlagFirstStage : 0) |
                            (h.stage_index + 1 == h.stage_count ? kFlagLastStage : 0));
  if ((h.flags & ~kKnownFlags) != 0 || (h.flags & (kFlagFirstStage | kFlagLastStage)) != position) {
    return error(StatusCode::kMalformed, "header flags are unknown or contradict the stage index");
  }
  // A blob for another node says so before any capacity complaint, which would mislead.
  if (expect != nullptr) {
    if (std::memcmp(expect->model_hash, h.model_hash, kModelHashSize) != 0) {
      return error(StatusCode::kMismatch, "blob is for a different model than this node's");
    }
    if (expect->stage_index != h.stage_index || expect->stage_count != h.stage_count) {
      return error(StatusCode::kMismatch, "blob is for a different stage than this node's");
    }
  }
  if (h.layer_count == 0) return error(StatusCode::kMalformed, "stage has no layers");
  if (h.micro_batch == 0 || h.slots == 0) {
    return error(StatusCode::kMalformed, "micro-batch size and slot count must be at least 1");
  }
  if (h.layer_count > kMaxLayers) {
    return error(StatusCode::kTooLarge, "more layers than this firmware holds (NMCM_MAX_LAYERS)");
  }
  if (h.tensor_count > kMaxTensors) {
    return error(StatusCode::kTooLarge, "more tensors than this firmware holds (NMCM_MAX_TENSORS)");
  }
  if (h.buffer_count > kMaxBuffers) {
    return error(StatusCode::kTooLarge, "more buffers than this firmware holds (NMCM_MAX_BUFFERS)");
  }
  if (h.slots > kMaxSlots) {
    return error(StatusCode::kTooLarge, "more slots than this firmware holds (NMCM_MAX_SLOTS)");
  }
  if (h.arena_size > arena_capacity) {
    return error(StatusCode::kTooLarge, "the stage needs a larger arena than this node has");
  }
  return ok_status();
}

Status check_layers(const uint8_t* blob, StageLayout* out) {
  const BlobHeader& h = out->header;
  for (uint32_t i = 0; i < h.layer_count; ++i) {
    const uint8_t* p = blob + h.layer_table + i * kLayerRecordSize;
    const LayerKernel* kernel = layer_kernel(p[0]);
    if (kernel == nullptr) return malformed("layer", i, "unknown layer kind");
    if ((p[1] & ~1u) != 0 || rd16(p + 6) != 0) {
      return malformed("layer", i, "unknown layer flags or nonzero reserved field");
    }
    LayerDesc& d = out->layers[i];
    d.kind = static_cast<LayerKind>(p[0]);
    d.has_bias = (p[1] & 1u) != 0;
    d.model_index = rd16(p + 4);
    if (!read_shape(p + 8, p[2], &d.in) || !read_shape(p + 20, p[3], &d.out)) {
      return malformed("layer", i, "shape rank is not 1 or 3, or a dimension is invalid");
    }
    // Every activation of the micro-batch must be addressable with 32-bit byte counts.
    if (d.in.numel() * 4u * h.micro_batch > 0xFFFFFFFFu ||
        d.out.numel() * 4u * h.micro_batch > 0xFFFFFFFFu) {
      return error_at(StatusCode::kTooLarge, "layer", static_cast<int32_t>(i),
                      "activations exceed 4 GiB");
    }
    d.kernel_h = rd16(p + 32);
    d.kernel_w = rd16(p + 34);
    d.stride_h = rd16(p + 36);
    d.stride_w = rd16(p + 38);
    d.pad_h = rd16(p + 40);
    d.pad_w = rd16(p + 42);
    d.weight_tensor = rdi16(p + 44);
    d.bias_tensor = rdi16(p + 46);
    if (i > 0 && d.model_index != out->layers[i - 1].model_index + 1) {
      return malformed("layer", i, "model indices of a stage's layers are not consecutive");
    }
    if (i > 0 && d.in != out->layers[i - 1].out) {
      return malformed("layer", i, "input shape is not the previous layer's output shape");
    }
    const Status s = kernel->check(d);
    if (!s.ok()) return malformed("layer", i, s.message);
    Shape unused;
    const bool wants_weight = kernel->param_shape(d, 0, &unused);
    const bool wants_bias = kernel->param_shape(d, 1, &unused);
    if (d.has_bias && !wants_bias) return malformed("layer", i, "this layer kind has no bias");
    const int32_t tensors = h.tensor_count;
    if (d.weight_tensor < -1 || d.weight_tensor >= tensors || d.bias_tensor < -1 ||
        d.bias_tensor >= tensors || wants_weight != (d.weight_tensor >= 0) ||
        wants_bias != (d.bias_tensor >= 0)) {
      return malformed("layer", i, "weight or bias tensor reference is missing or invalid");
    }
  }
  return ok_status();
}

Status check_tensors(const uint8_t* blob, StageLayout* out) {
  const BlobHeader& h = out->header;
  const uint64_t data_end = uint64_t{h.total_size} - kBlobCrcSize;
  for (uint32_t t = 0; t < h.tensor_count; ++t) {
    const uint8_t* p = blob + h.tensor_table + t * kTensorRecordSize;
    TensorDesc& d = out->tensors[t];
    d.data_offset = rd32(p);
    d.count = rd32(p + 4);
    d.layer = rd16(p + 8);
    d.role = p[10];
    const uint8_t rank = p[11];
    if (rank < 1 || rank > 4 || d.layer >= h.layer_count || d.role > 1 || rd32(p + 28) != 0) {
      return malformed("tensor", t, "bad rank, layer, role or reserved field");
    }
    d.shape = Shape{{rd32(p + 12), rd32(p + 16), rd32(p + 20), rd32(p + 24)}, rank};
    for (uint8_t i = rank; i < 4; ++i) {
      if (d.shape.dims[i] != 1) return malformed("tensor", t, "unused dimension is not 1");
    }
    if (!numel_fits_u32(d.shape) || d.shape.numel() != d.count) {
      return malformed("tensor", t, "element count does not match the shape");
    }
    if (d.data_offset % kArenaAlign != 0 ||
        uint64_t{h.data} + d.data_offset + 4 * uint64_t{d.count} > data_end) {
      return malformed("tensor", t, "data is unaligned or outside the data region");
    }
    const LayerDesc& layer = out->layers[d.layer];
    if ((d.role == 0 ? layer.weight_tensor : layer.bias_tensor) != static_cast<int32_t>(t)) {
      return malformed("tensor", t, "tensor is not the one its layer refers to");
    }
    Shape expected;
    if (!layer_kernel(static_cast<uint8_t>(layer.kind))->param_shape(layer, d.role, &expected) ||
        expected != d.shape) {
      return malformed("tensor", t, "shape is not what its layer needs");
    }
  }
  return ok_status();
}

// Activations i of one flatten chain share storage ("Buffer record"): group[i] numbers them.
void alias_groups(const StageLayout& l, uint16_t* group) {
  const uint32_t n = l.header.layer_count;
  group[0] = 0;
  for (uint32_t i = 0; i < n; ++i) {
    group[i + 1] =
        static_cast<uint16_t>(l.layers[i].kind == LayerKind::kFlatten ? group[i] : group[i] + 1);
  }
}

struct Lifetime {
  uint16_t first, last;
};

// The steps ("Buffer record", time steps) at which the executor uses activation i (kAct) or its
// gradient (kActGrad), and whether backward or a link needs the activation kept per slot.
Lifetime act_use(const StageLayout& l, const uint16_t* group, uint32_t i, bool grad,
                 bool* stashed) {
  const uint32_t n = l.header.layer_count;
  uint32_t head = i, tail = i;
  while (head > 0 && group[head - 1] == group[i]) --head;
  while (tail < n && group[tail + 1] == group[i]) ++tail;
  if (grad) {
    *stashed = false;
    const uint32_t produced = tail == n ? n : 2 * n - tail;
    return Lifetime{static_cast<uint16_t>(produced), static_cast<uint16_t>(2 * n - head + 1)};
  }
  auto reads = [&l](uint32_t layer, uint8_t what) {
    return (layer_kernel(static_cast<uint8_t>(l.layers[layer].kind))->backward_reads & what) != 0;
  };
  bool keep = head == 0 || tail == n;  // link buffers: input from upstream, output downstream
  for (uint32_t j = head; j <= tail; ++j) {
    keep = keep || (j < n && reads(j, kReadsInput)) || (j > 0 && reads(j - 1, kReadsOutput));
  }
  *stashed = keep;
  if (keep) return Lifetime{0, kForever};
  return Lifetime{static_cast<uint16_t>(head - 1), static_cast<uint16_t>(tail)};
}

BufferDesc read_buffer(const uint8_t* p) {
  return BufferDesc{rd32(p),      rd32(p + 4), static_cast<BufferKind>(p[8]), p[9], rd16(p + 10),
                    rd16(p + 12), rd16(p + 14)};
}

bool overlaps(const BufferDesc& a, const BufferDesc& b) {
  const bool bytes = uint64_t{a.offset} < uint64_t{b.offset} + b.bytes &&
                     uint64_t{b.offset} < uint64_t{a.offset} + a.bytes;
  const bool time = !(a.last_use < b.first_use || b.last_use < a.first_use);
  return bytes && time && a.bytes != 0 && b.bytes != 0;
}

Status check_buffers(const uint8_t* blob, StageLayout* out) {
  const BlobHeader& h = out->header;
  const uint32_t n = h.layer_count;
  const bool first = h.stage_index == 0;
  const bool last = h.stage_index + 1 == h.stage_count;
  const bool momentum = (h.flags & kFlagMomentum) != 0;
  uint16_t group[kMaxLayers + 1];
  alias_groups(*out, group);
  // The first stage computes no gradient for its input (nor what aliases it), unless that storage
  // is also the output of a stage with a downstream neighbour: GRADIENTS land there.
  const bool input_grad = !first || (group[n] == 0 && !last);

  for (uint32_t t = 0; t < kMaxTensors; ++t)
    out->param[t] = out->grad[t] = out->momentum[t] = kNoBuffer;
  for (uint32_t i = 0; i <= kMaxLayers; ++i) {
    out->act_grad[i] = kNoBuffer;
    for (uint32_t s = 0; s < kMaxSlots; ++s) out->act[i][s] = kNoBuffer;
  }
  for (uint32_t s = 0; s < kMaxSlots; ++s) out->labels[s] = kNoBuffer;

  for (uint32_t k = 0; k < h.buffer_count; ++k) {
    const BufferDesc b = read_buffer(blob + h.buffer_table + k * kBufferRecordSize);
    if (static_cast<uint8_t>(b.kind) < 1 || static_cast<uint8_t>(b.kind) > 6) {
      return malformed("buffer", k, "unknown buffer kind");
    }
    if (b.offset % kArenaAlign != 0 || uint64_t{b.offset} + b.bytes > h.arena_size) {
      return malformed("buffer", k, "buffer is unaligned or lies outside the arena");
    }
    if (b.slot != kSharedSlot && b.slot >= h.slots)
      return malformed("buffer", k, "slot out of range");
    if (b.first_use > b.last_use) return malformed("buffer", k, "lifetime ends before it starts");

    uint64_t need = 0;
    Lifetime use{0, kForever};
    uint32_t* target = nullptr;
    switch (b.kind) {
      case BufferKind::kParam:
      case BufferKind::kGrad:
      case BufferKind::kMomentum: {
        if (b.index >= h.tensor_count || b.slot != 0) {
          return malformed("buffer", k, "parameter buffer has a bad tensor index or slot");
        }
        if (b.kind == BufferKind::kMomentum && !momentum) {
          return malformed("buffer", k, "momentum buffer in a blob without the momentum flag");
        }
        need = 4 * uint64_t{out->tensors[b.index].count};
        uint32_t* table = b.kind == BufferKind::kParam  ? out->param
                          : b.kind == BufferKind::kGrad ? out->grad
                                                        : out->momentum;
        target = &table[b.index];
        break;
      }
      case BufferKind::kAct:
      case BufferKind::kActGrad: {
        if (b.index > n) return malformed("buffer", k, "activation index out of range");
        const bool grad = b.kind == BufferKind::kActGrad;
        const Shape& shape = b.index < n ? out->layers[b.index].in : out->layers[n - 1].out;
        need = 4 * uint64_t{h.micro_batch} * shape.numel();
        bool stashed = false;
        use = act_use(*out, group, b.index, grad, &stashed);
        if (grad) {
          if (b.slot != kSharedSlot) {
            return malformed("buffer", k, "activation gradients are shared, not per slot");
          }
          if (!input_grad && group[b.index] == 0) continue;
          target = &out->act_grad[b.index];
          break;
        }
        if (stashed && b.slot == kSharedSlot && h.slots > 1) {
          return malformed("buffer", k, "activation that backward needs is not kept per slot");
        }
        if (b.slot == kSharedSlot) {
          for (uint32_t s = 1; s < h.slots; ++s) {
            if (out->act[b.index][s] != kNoBuffer)
              return malformed("buffer", k, "duplicate buffer");
            out->act[b.index][s] = b.offset;
          }
          target = &out->act[b.index][0];
        } else {
          target = &out->act[b.index][b.slot];
        }
        break;
      }
      case BufferKind::kLabels:
        if (!last || b.index != 0 || b.slot == kSharedSlot) {
          return malformed("buffer", k, "labels belong to the last stage, one buffer per slot");
        }
        need = 4 * uint64_t{h.micro_batch};
        target = &out->labels[b.slot];
        break;
    }
    if (b.bytes < need) return malformed("buffer", k, "buffer is smaller than what it holds");
    if (b.first_use > use.first || b.last_use < use.last) {
      return malformed("buffer", k, "lifetime does not cover the steps that use the buffer");
    }
    if (*target != kNoBuffer) return malformed("buffer", k, "duplicate buffer");
    *target = b.offset;
  }

  // Everything the executor needs exists ("Checks the loader makes").
  for (uint32_t t = 0; t < h.tensor_count; ++t) {
    if (out->param[t] == kNoBuffer || out->grad[t] == kNoBuffer ||
        (momentum && out->momentum[t] == kNoBuffer)) {
      return malformed("tensor", t, "parameter, gradient or momentum buffer is missing");
    }
  }
  for (uint32_t i = 0; i <= n; ++i) {
    for (uint32_t s = 0; s < h.slots; ++s) {
      if (out->act[i][s] == kNoBuffer) return malformed("activation", i, "buffer is missing");
    }
    if ((input_grad || group[i] != 0) && out->act_grad[i] == kNoBuffer) {
      return malformed("activation", i, "gradient buffer is missing");
    }
  }
  for (uint32_t s = 0; last && s < h.slots; ++s) {
    if (out->labels[s] == kNoBuffer) return malformed("buffer", s, "labels buffer is missing");
  }
  // A flatten moves no data, so its output must be its input's storage.
  for (uint32_t i = 0; i < n; ++i) {
    if (out->layers[i].kind != LayerKind::kFlatten) continue;
    bool same = out->act_grad[i] == out->act_grad[i + 1];
    for (uint32_t s = 0; s < h.slots; ++s) same = same && out->act[i][s] == out->act[i + 1][s];
    if (!same) return malformed("layer", i, "flatten output does not share its input's storage");
  }
  // Buffers live at the same time must not share bytes (flatten aliases excepted): then no
  // accepted blob can make one buffer overwrite another that is still needed.
  for (uint32_t a = 0; a < h.buffer_count; ++a) {
    const BufferDesc x = read_buffer(blob + h.buffer_table + a * kBufferRecordSize);
    for (uint32_t c = a + 1; c < h.buffer_count; ++c) {
      const BufferDesc y = read_buffer(blob + h.buffer_table + c * kBufferRecordSize);
      if (!overlaps(x, y)) continue;
      const bool alias =
          x.kind == y.kind && (x.kind == BufferKind::kAct || x.kind == BufferKind::kActGrad) &&
          x.slot == y.slot && x.offset == y.offset && group[x.index] == group[y.index];
      if (!alias) return malformed("buffer", c, "overlaps another buffer while both are live");
    }
  }
  return ok_status();
}

}  // namespace

Status blob_check(const uint8_t* blob, size_t len, size_t arena_capacity, const StageExpect* expect,
                  StageLayout* layout) {
  if (layout == nullptr) return error(StatusCode::kInvalidArgument, "no layout given");
  if (len < kBlobHeaderSize + kBlobCrcSize) {
    return error(StatusCode::kTruncated, "blob is shorter than a header and its CRC");
  }
  if (blob == nullptr) return error(StatusCode::kInvalidArgument, "no blob given");
  if (std::memcmp(blob, kMagic, sizeof kMagic) != 0) {
    return error(StatusCode::kBadMagic, "not a stage blob (magic is not NMCB)");
  }
  const uint16_t version = rd16(blob + 4);
  if (version > kBlobVersion) {
    return error(StatusCode::kUnsupportedVersion,
                 "blob format version is newer than this firmware reads");
  }
  if (version != kBlobVersion) {
    return error(StatusCode::kUnsupportedVersion, "blob format version is not one this reads");
  }
  if (rd16(blob + 6) != kBlobHeaderSize) {
    return error(StatusCode::kMalformed, "header size is not 64");
  }
  const uint32_t total = rd32(blob + 8);
  if (total > len) return error(StatusCode::kTruncated, "blob is shorter than its header says");
  if (total < len) return error(StatusCode::kMalformed, "blob is longer than its header says");
  if (crc32(blob, len - kBlobCrcSize) != rd32(blob + len - kBlobCrcSize)) {
    return error(StatusCode::kCorrupt, "CRC mismatch: the blob is corrupt");
  }
  layout->header = read_header(blob);
  NMCM_RETURN_IF_ERROR(check_header(layout->header, arena_capacity, expect));
  NMCM_RETURN_IF_ERROR(check_layers(blob, layout));
  NMCM_RETURN_IF_ERROR(check_tensors(blob, layout));
  return check_buffers(blob, layout);
}

BufferDesc blob_buffer(const uint8_t* blob, const BlobHeader& header, uint32_t i) {
  return read_buffer(blob + header.buffer_table + i * kBufferRecordSize);
}

float blob_tensor_value(const uint8_t* blob, const StageLayout& layout, uint32_t t, uint32_t i) {
  const uint32_t bits = rd32(blob + layout.header.data + layout.tensors[t].data_offset + 4 * i);
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

void blob_store_tensor(uint8_t* blob, const StageLayout& layout, uint32_t t, const float* data) {
  uint8_t* p = blob + layout.header.data + layout.tensors[t].data_offset;
  for (uint32_t i = 0; i < layout.tensors[t].count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &data[i], sizeof bits);
    wr32(p + 4 * i, bits);
  }
}

void blob_seal(uint8_t* blob, size_t len) {
  wr32(blob + len - kBlobCrcSize, crc32(blob, len - kBlobCrcSize));
}

}  // namespace nmcm
